//! Weighted BCE + MCC loss, as the SA-UNetv2 reference: `a·BCE + b·(1 − soft MCC)`, with
//! BCE computed from logits (log-sigmoid) so it never takes the log of 0 or 1.

use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Weight of the BCE term (reference 0.5).
    pub bce_weight: f64,
    /// Weight of the (1 − MCC) term (reference 0.5).
    pub mcc_weight: f64,
    /// Weight of the vessel class inside BCE (1 = unweighted).
    pub vessel_weight: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            bce_weight: 0.5,
            mcc_weight: 0.5,
            vessel_weight: 1.0,
        }
    }
}

/// Keeps the MCC denominator away from zero (all-background batches).
const MCC_EPSILON: f64 = 1e-7;

impl LossConfig {
    /// Scalar loss of `logits` against 0/1 `labels` (same shape), averaged over the batch.
    pub fn loss(&self, logits: Tensor<4>, labels: Tensor<4>) -> Tensor<1> {
        let background = labels.clone().neg().add_scalar(1.0);
        // -[w·y·log σ(z) + (1−y)·log σ(−z)]
        let bce = (labels.clone().mul_scalar(self.vessel_weight) * log_sigmoid(logits.clone())
            + background.clone() * log_sigmoid(logits.clone().neg()))
        .mean()
        .neg();
        // Soft MCC from probabilities; means instead of sums keep the products in range.
        let p = sigmoid(logits);
        let q = p.clone().neg().add_scalar(1.0);
        let tp = (p.clone() * labels.clone()).mean();
        let fp = (p * background.clone()).mean();
        let fn_ = (q.clone() * labels).mean();
        let tn = (q * background).mean();
        let numerator = tp.clone() * tn.clone() - fp.clone() * fn_.clone();
        let denominator =
            ((tp.clone() + fp.clone()) * (tp + fn_.clone()) * (tn.clone() + fp) * (tn + fn_))
                .add_scalar(MCC_EPSILON)
                .sqrt();
        let mcc = numerator / denominator;
        bce.mul_scalar(self.bce_weight) + mcc.neg().add_scalar(1.0).mul_scalar(self.mcc_weight)
    }
}
