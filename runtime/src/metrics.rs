//! The field's segmentation metrics, computed one way for training, evaluation and the device.
//!
//! Conventions for degenerate images (no vessels in the label, or none predicted):
//! - a ratio whose numerator and denominator are both zero counts as perfect agreement
//!   (1.0): e.g. F1 and Jaccard are 1 when label and prediction are both empty, sensitivity
//!   is 1 when there is nothing to find;
//! - MCC is 0 when any marginal of the confusion matrix is zero (as scikit-learn);
//! - AUC is `None` when only one class is present (it is undefined), and means skip it.

use serde::{Deserialize, Serialize};

/// Pixel counts of a binary segmentation against its label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        if num == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        num / den
    }
}

impl Confusion {
    /// Counts over the pixels where `mask` is set (all pixels when `mask` is `None`); a
    /// pixel is predicted a vessel when its probability is `>= threshold`.
    pub fn from_probabilities(
        probabilities: &[f32],
        labels: &[u8],
        mask: Option<&[u8]>,
        threshold: f32,
    ) -> Self {
        let mut c = Confusion::default();
        for i in 0..labels.len() {
            if mask.is_some_and(|m| m[i] == 0) {
                continue;
            }
            c.add(probabilities[i] >= threshold, labels[i] != 0);
        }
        c
    }

    /// Counts for a binary prediction (0 / non-zero), e.g. a second human observer.
    pub fn from_binary(prediction: &[u8], labels: &[u8], mask: Option<&[u8]>) -> Self {
        let mut c = Confusion::default();
        for i in 0..labels.len() {
            if mask.is_some_and(|m| m[i] == 0) {
                continue;
            }
            c.add(prediction[i] != 0, labels[i] != 0);
        }
        c
    }

    #[inline]
    fn add(&mut self, predicted: bool, actual: bool) {
        match (predicted, actual) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }
    pub fn accuracy(&self) -> f64 {
        ratio((self.tp + self.tn) as f64, self.total() as f64)
    }
    /// Recall of the vessel class.
    pub fn sensitivity(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fn_) as f64)
    }
    pub fn specificity(&self) -> f64 {
        ratio(self.tn as f64, (self.tn + self.fp) as f64)
    }
    /// F1 score, equal to the Dice coefficient.
    pub fn f1(&self) -> f64 {
        ratio(
            2.0 * self.tp as f64,
            (2 * self.tp + self.fp + self.fn_) as f64,
        )
    }
    /// Jaccard index (IoU) of the vessel class.
    pub fn jaccard(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fp + self.fn_) as f64)
    }
    /// Matthews correlation coefficient.
    pub fn mcc(&self) -> f64 {
        let (tp, fp, tn, fn_) = (
            self.tp as f64,
            self.fp as f64,
            self.tn as f64,
            self.fn_ as f64,
        );
        let den = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
        if den == 0.0 {
            0.0
        } else {
            (tp * tn - fp * fn_) / den
        }
    }
}

/// Area under the ROC curve of `probabilities` against binary `labels`, over the pixels
/// where `mask` is set. Exact (Mann–Whitney rank statistic, ties counted half).
/// `None` when only one class is present.
pub fn auc_roc(probabilities: &[f32], labels: &[u8], mask: Option<&[u8]>) -> Option<f64> {
    let mut scored: Vec<(f32, bool)> = (0..labels.len())
        .filter(|&i| mask.is_none_or(|m| m[i] != 0))
        .map(|i| (probabilities[i], labels[i] != 0))
        .collect();
    let positives = scored.iter().filter(|s| s.1).count() as f64;
    let negatives = scored.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    scored.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' (1-based, tie-averaged) ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j < scored.len() && scored[j].0 == scored[i].0 {
            j += 1;
        }
        let average_rank = (i + 1 + j) as f64 / 2.0;
        let tied_positives = scored[i..j].iter().filter(|s| s.1).count() as f64;
        rank_sum += average_rank * tied_positives;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// One image's (or a mean over images') scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub accuracy: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    pub f1: f64,
    pub jaccard: f64,
    pub mcc: f64,
    /// `None` where undefined (single-class region) or not applicable (binary prediction).
    pub auc: Option<f64>,
}

impl Scores {
    pub fn from_confusion(c: &Confusion, auc: Option<f64>) -> Self {
        Self {
            accuracy: c.accuracy(),
            sensitivity: c.sensitivity(),
            specificity: c.specificity(),
            f1: c.f1(),
            jaccard: c.jaccard(),
            mcc: c.mcc(),
            auc,
        }
    }

    /// Scores of a probability map at `threshold`, with AUC.
    pub fn of_probabilities(
        probabilities: &[f32],
        labels: &[u8],
        mask: Option<&[u8]>,
        threshold: f32,
    ) -> Self {
        let c = Confusion::from_probabilities(probabilities, labels, mask, threshold);
        Self::from_confusion(&c, auc_roc(probabilities, labels, mask))
    }

    /// Scores of a binary prediction (no AUC).
    pub fn of_binary(prediction: &[u8], labels: &[u8], mask: Option<&[u8]>) -> Self {
        Self::from_confusion(&Confusion::from_binary(prediction, labels, mask), None)
    }

    /// Mean over images (the field reports per-image means). AUC is averaged over the images
    /// where it is defined.
    pub fn mean(all: &[Scores]) -> Scores {
        if all.is_empty() {
            return Scores::default();
        }
        let n = all.len() as f64;
        let mean_of = |f: fn(&Scores) -> f64| all.iter().map(f).sum::<f64>() / n;
        let aucs: Vec<f64> = all.iter().filter_map(|s| s.auc).collect();
        Scores {
            accuracy: mean_of(|s| s.accuracy),
            sensitivity: mean_of(|s| s.sensitivity),
            specificity: mean_of(|s| s.specificity),
            f1: mean_of(|s| s.f1),
            jaccard: mean_of(|s| s.jaccard),
            mcc: mean_of(|s| s.mcc),
            auc: (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn hand_computed_confusion_matrix() {
        // Predictions at 0.5: 1 1 0 0 1 0 against labels 1 1 1 0 0 0:
        // TP 2, FN 1, FP 1, TN 2.
        let p = [0.9, 0.8, 0.3, 0.2, 0.6, 0.1];
        let l = [1, 1, 1, 0, 0, 0];
        let c = Confusion::from_probabilities(&p, &l, None, 0.5);
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 1,
                tn: 2,
                fn_: 1
            }
        );
        close(c.accuracy(), 4.0 / 6.0);
        close(c.sensitivity(), 2.0 / 3.0);
        close(c.specificity(), 2.0 / 3.0);
        close(c.f1(), 4.0 / 6.0);
        close(c.jaccard(), 0.5);
        // (2*2 - 1*1) / sqrt(3*3*3*3)
        close(c.mcc(), 3.0 / 9.0);
    }

    #[test]
    fn threshold_is_inclusive_and_mask_excludes_pixels() {
        let p = [0.5, 0.49, 0.7, 0.1];
        let l = [1, 1, 0, 0];
        let m = [1, 1, 0, 1];
        let c = Confusion::from_probabilities(&p, &l, Some(&m), 0.5);
        assert_eq!(
            c,
            Confusion {
                tp: 1,
                fp: 0,
                tn: 1,
                fn_: 1
            }
        );
        // TP 3, FP 2, TN 4, FN 1: MCC = (12 - 2) / sqrt(5*4*6*5) = 10 / sqrt(600)
        let c = Confusion {
            tp: 3,
            fp: 2,
            tn: 4,
            fn_: 1,
        };
        close(c.mcc(), 10.0 / 600f64.sqrt());
        close(c.f1(), 6.0 / 9.0);
        close(c.jaccard(), 0.5);
    }

    #[test]
    fn known_auc_example() {
        // scikit-learn's roc_auc_score documentation example.
        let auc = auc_roc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1], None).unwrap();
        close(auc, 0.75);
        // Ties count half: one positive tied with one negative, one clearly above.
        let auc = auc_roc(&[0.5, 0.5, 0.9], &[0, 1, 1], None).unwrap();
        close(auc, 0.75);
        // Perfect and inverted rankings.
        close(
            auc_roc(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1], None).unwrap(),
            1.0,
        );
        close(
            auc_roc(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1], None).unwrap(),
            0.0,
        );
        // The mask removes the only badly ranked negative.
        let auc = auc_roc(&[0.1, 0.95, 0.35, 0.8], &[0, 0, 1, 1], Some(&[1, 0, 1, 1])).unwrap();
        close(auc, 1.0);
    }

    #[test]
    fn degenerate_cases() {
        // Empty label, empty prediction: perfect agreement, MCC 0, AUC undefined.
        let s = Scores::of_probabilities(&[0.1, 0.2], &[0, 0], None, 0.5);
        assert_eq!(
            (s.f1, s.jaccard, s.sensitivity, s.accuracy),
            (1.0, 1.0, 1.0, 1.0)
        );
        assert_eq!(s.mcc, 0.0);
        assert_eq!(s.auc, None);
        // Empty prediction, vessels in the label: F1 0, sensitivity 0.
        let s = Scores::of_probabilities(&[0.1, 0.2, 0.3], &[1, 1, 0], None, 0.5);
        assert_eq!(
            (s.f1, s.sensitivity, s.specificity, s.mcc),
            (0.0, 0.0, 1.0, 0.0)
        );
        // Empty label, something predicted: F1 0, specificity below 1.
        let s = Scores::of_probabilities(&[0.9, 0.2], &[0, 0], None, 0.5);
        assert_eq!((s.f1, s.specificity, s.sensitivity), (0.0, 0.5, 1.0));
        // Everything masked out.
        let c = Confusion::from_binary(&[1], &[1], Some(&[0]));
        assert_eq!(c.total(), 0);
        assert_eq!(c.accuracy(), 1.0);
    }

    #[test]
    fn mean_skips_undefined_auc() {
        let a = Scores {
            f1: 0.8,
            auc: Some(0.9),
            ..Default::default()
        };
        let b = Scores {
            f1: 0.6,
            auc: None,
            ..Default::default()
        };
        let m = Scores::mean(&[a, b]);
        close(m.f1, 0.7);
        assert_eq!(m.auc, Some(0.9));
    }
}
