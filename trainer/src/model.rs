//! SA-UNetv2 (arXiv 2509.11774) in burn, as the paper's reference implementation builds it.
//!
//! - Encoder levels of width w, 2w, 3w (w = 16), each two [3×3 conv (bias) → DropBlock →
//!   GroupNorm(8) → SiLU] units, 2×2 max-pool between levels.
//! - Bottleneck of width 4w: one unit → spatial attention → one unit.
//! - Decoder levels 3w, 2w, w: 3×3 transposed conv, stride 2 (exact 2× upsampling) giving `d`,
//!   cross-scale spatial attention (CSA) on the skip, concat `[d, attended skip]`, two units.
//! - Head: 1×1 conv. The model returns logits; [`SaUnetV2::probabilities`] applies the sigmoid
//!   (the loss works on logits for numerical stability).
//!
//! With w = 16 and RGB input this is 260,521 parameters.

use burn::module::{Flag, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Architecture hyper-parameters. The defaults are the paper's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaUnetConfig {
    pub in_channels: usize,
    /// Width of the first level; levels are 1×, 2×, 3× and (bottleneck) 4× this.
    pub base_width: usize,
    pub groups: usize,
    pub dropblock_size: usize,
    pub dropblock_rate: f64,
    pub attention_kernel: usize,
}

impl Default for SaUnetConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            base_width: 16,
            groups: 8,
            dropblock_size: 7,
            dropblock_rate: 0.15,
            attention_kernel: 7,
        }
    }
}

impl SaUnetConfig {
    /// True when `other` has the same weights (shapes and meaning): the settings other than
    /// DropBlock's, which only shape training.
    pub fn same_weights(&self, other: &Self) -> bool {
        (
            self.in_channels,
            self.base_width,
            self.groups,
            self.attention_kernel,
        ) == (
            other.in_channels,
            other.base_width,
            other.groups,
            other.attention_kernel,
        )
    }
}

/// DropBlock (Ghiasi et al. 2018): zeroes square blocks of a feature map while training and
/// rescales the rest; the identity at inference.
#[derive(Module, Debug)]
pub struct DropBlock {
    pub block_size: usize,
    pub rate: f64,
    pub training: Param<Flag>,
}

impl DropBlock {
    pub fn new(block_size: usize, rate: f64) -> Self {
        Self {
            block_size,
            rate,
            training: Param::from_bool(true),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if !self.training.is_enabled() || !x.device().is_autodiff() || self.rate <= 0.0 {
            return x;
        }
        let [_, _, h, w] = x.dims();
        // Small maps (tiny inputs) clamp the block; keep it odd so padding preserves the size.
        let mut block = self.block_size.min(h).min(w).max(1);
        if block % 2 == 0 {
            block -= 1;
        }
        // Seed rate chosen so that about `rate` of the positions end up dropped.
        let valid = ((h - block + 1) * (w - block + 1)) as f64;
        let gamma = (self.rate / (block * block) as f64) * (h * w) as f64 / valid;
        let (dims, device) = (x.dims(), x.device());
        let mask = drop_mask(dims, block, gamma.min(1.0), backend_seed(&device));
        x * Tensor::from_data(TensorData::new(mask, dims), &device)
    }
}

/// A seed for host-side randomness drawn from the backend's RNG, so that seeding the
/// backend (as the training loop does every step) makes the draw reproducible.
fn backend_seed(device: &Device) -> u64 {
    let bits = Tensor::<1>::random([2], Distribution::Default, device)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("the backend converts its own random draws to f32");
    bits.iter()
        .fold(0u64, |acc, v| (acc << 32) | u64::from(v.to_bits()))
}

/// DropBlock's multiplier for a `[n, c, h, w]` map: seeds drawn at rate `gamma` (sparse
/// sampling, one geometric gap a seed), each grown into a `block`×`block` square of zeros
/// (clipped at the borders); the kept entries hold numel / kept, so the map's sum is kept.
/// Built on the host: the seeds are few, and dilating them with a max-pool on the backend
/// costs more than the whole conv it follows.
pub fn drop_mask(dims: [usize; 4], block: usize, gamma: f64, seed: u64) -> Vec<f32> {
    use rand::SeedableRng;
    let [n, c, h, w] = dims;
    let numel = n * c * h * w;
    let mut mask = vec![1.0f32; numel];
    if gamma > 0.0 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let half = block / 2;
        let gap = rand_distr::Geometric::new(gamma).expect("0 < gamma <= 1");
        let mut at = rand_distr::Distribution::sample(&gap, &mut rng);
        while (at as usize) < numel {
            let i = at as usize;
            let (plane, y, x) = (i / (h * w), (i % (h * w)) / w, i % w);
            let rows = y.saturating_sub(half)..(y + half + 1).min(h);
            let cols = x.saturating_sub(half)..(x + half + 1).min(w);
            for row in rows {
                let start = plane * h * w + row * w;
                mask[start + cols.start..start + cols.end].fill(0.0);
            }
            at = at
                .saturating_add(1)
                .saturating_add(rand_distr::Distribution::sample(&gap, &mut rng));
        }
    }
    let kept = mask.iter().filter(|&&v| v > 0.0).count().max(1);
    let scale = numel as f32 / kept as f32;
    for v in mask.iter_mut().filter(|v| **v > 0.0) {
        *v = scale;
    }
    mask
}

/// 3×3 conv (bias) → DropBlock → GroupNorm → SiLU.
#[derive(Module, Debug)]
pub struct ConvUnit {
    pub conv: Conv2d,
    pub dropblock: DropBlock,
    pub norm: GroupNorm,
}

impl ConvUnit {
    fn new(c: &SaUnetConfig, cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([cin, cout], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            dropblock: DropBlock::new(c.dropblock_size, c.dropblock_rate),
            norm: GroupNormConfig::new(c.groups, cout).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        silu(
            self.norm
                .forward(self.dropblock.forward(self.conv.forward(x))),
        )
    }
}

/// Two [`ConvUnit`]s.
#[derive(Module, Debug)]
pub struct ConvBlock {
    pub first: ConvUnit,
    pub second: ConvUnit,
}

impl ConvBlock {
    fn new(c: &SaUnetConfig, cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            first: ConvUnit::new(c, cin, cout, device),
            second: ConvUnit::new(c, cout, cout, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.second.forward(self.first.forward(x))
    }
}

fn attention_conv(kernel: usize, device: &Device) -> Conv2d {
    let p = kernel / 2;
    Conv2dConfig::new([2, 1], [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

/// Spatial attention: `x · σ(conv([mean_c(x), max_c(x)]))`.
#[derive(Module, Debug)]
pub struct SpatialAttention {
    pub conv: Conv2d,
}

impl SpatialAttention {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pooled = Tensor::cat(vec![x.clone().mean_dim(1), x.clone().max_dim(1)], 1);
        x * sigmoid(self.conv.forward(pooled))
    }
}

/// Cross-scale spatial attention on a skip connection:
/// `skip · σ(conv([mean_c(skip), mean_c(decoder)]))`.
#[derive(Module, Debug)]
pub struct CrossScaleAttention {
    pub conv: Conv2d,
}

impl CrossScaleAttention {
    pub fn forward(&self, skip: Tensor<4>, decoder: Tensor<4>) -> Tensor<4> {
        let pooled = Tensor::cat(vec![skip.clone().mean_dim(1), decoder.mean_dim(1)], 1);
        skip * sigmoid(self.conv.forward(pooled))
    }
}

/// One decoder level: upsample, attend the skip, fuse.
#[derive(Module, Debug)]
pub struct DecoderLevel {
    pub up: ConvTranspose2d,
    pub attention: CrossScaleAttention,
    pub block: ConvBlock,
}

impl DecoderLevel {
    fn new(c: &SaUnetConfig, cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            // padding 1 + output padding 1: exactly 2H×2W.
            up: ConvTranspose2dConfig::new([cin, cout], [3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_padding_out([1, 1])
                .init(device),
            attention: CrossScaleAttention {
                conv: attention_conv(c.attention_kernel, device),
            },
            block: ConvBlock::new(c, 2 * cout, cout, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>, skip: Tensor<4>) -> Tensor<4> {
        let d = self.up.forward(x);
        let attended = self.attention.forward(skip, d.clone());
        self.block.forward(Tensor::cat(vec![d, attended], 1))
    }
}

#[derive(Module, Debug)]
pub struct SaUnetV2 {
    pub enc1: ConvBlock,
    pub enc2: ConvBlock,
    pub enc3: ConvBlock,
    pub pool: MaxPool2d,
    pub bottleneck_in: ConvUnit,
    pub bottleneck_attention: SpatialAttention,
    pub bottleneck_out: ConvUnit,
    pub dec3: DecoderLevel,
    pub dec2: DecoderLevel,
    pub dec1: DecoderLevel,
    pub head: Conv2d,
}

impl SaUnetV2 {
    pub fn new(c: &SaUnetConfig, device: &Device) -> Self {
        let w = c.base_width;
        Self {
            enc1: ConvBlock::new(c, c.in_channels, w, device),
            enc2: ConvBlock::new(c, w, 2 * w, device),
            enc3: ConvBlock::new(c, 2 * w, 3 * w, device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            bottleneck_in: ConvUnit::new(c, 3 * w, 4 * w, device),
            bottleneck_attention: SpatialAttention {
                conv: attention_conv(c.attention_kernel, device),
            },
            bottleneck_out: ConvUnit::new(c, 4 * w, 4 * w, device),
            dec3: DecoderLevel::new(c, 4 * w, 3 * w, device),
            dec2: DecoderLevel::new(c, 3 * w, 2 * w, device),
            dec1: DecoderLevel::new(c, 2 * w, w, device),
            head: Conv2dConfig::new([w, 1], [1, 1]).init(device),
        }
    }

    /// `[N, C, H, W]` → vessel logits `[N, 1, H, W]`. H and W must be multiples of 8.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s1 = self.enc1.forward(x);
        let s2 = self.enc2.forward(self.pool.forward(s1.clone()));
        let s3 = self.enc3.forward(self.pool.forward(s2.clone()));
        let b = self.bottleneck_in.forward(self.pool.forward(s3.clone()));
        let b = self
            .bottleneck_out
            .forward(self.bottleneck_attention.forward(b));
        let d3 = self.dec3.forward(b, s3);
        let d2 = self.dec2.forward(d3, s2);
        let d1 = self.dec1.forward(d2, s1);
        self.head.forward(d1)
    }

    /// Vessel probabilities `[N, 1, H, W]`.
    pub fn probabilities(&self, x: Tensor<4>) -> Tensor<4> {
        sigmoid(self.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::drop_mask;

    #[test]
    fn drop_masks_drop_about_the_rate_in_blocks_and_keep_the_sum() {
        let (h, w, block, rate) = (64usize, 64usize, 7usize, 0.15f64);
        let valid = ((h - block + 1) * (w - block + 1)) as f64;
        let gamma = rate / (block * block) as f64 * (h * w) as f64 / valid;
        let mask = drop_mask([2, 8, h, w], block, gamma, 11);
        let numel = mask.len() as f64;
        let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / numel;
        // About the rate: overlapping blocks drop less, the seed rate's border correction more.
        assert!((0.10..=0.18).contains(&dropped), "dropped {dropped}");
        let mean = mask.iter().map(|&v| f64::from(v)).sum::<f64>() / numel;
        assert!((mean - 1.0).abs() < 1e-4, "mean {mean}");
        // Zeros come in blocks: an isolated zero (no zero neighbour at all) never occurs.
        let plane = h * w;
        for p in 0..16 {
            for y in 1..h - 1 {
                for x in 1..w - 1 {
                    let at = |yy: usize, xx: usize| mask[p * plane + yy * w + xx];
                    if at(y, x) == 0.0 {
                        assert!(
                            at(y - 1, x) == 0.0 || at(y + 1, x) == 0.0,
                            "a lone zero at plane {p} ({x}, {y})"
                        );
                    }
                }
            }
        }
        // Seeded: the same seed, the same mask; another seed, another.
        assert_eq!(mask, drop_mask([2, 8, h, w], block, gamma, 11));
        assert_ne!(mask, drop_mask([2, 8, h, w], block, gamma, 12));
        // Rate 0 keeps everything at 1.
        assert!(drop_mask([1, 1, 8, 8], 3, 0.0, 1).iter().all(|&v| v == 1.0));
    }
}
