//! NNEF export of a trained SA-UNetv2: `graph.nnef` text and `.dat` tensors, written by hand
//! (burn has no NNEF writer) so the trainer needs no tract dependency to write a model. This
//! is the one definition of the inference graph; burn's `model.rs` is the one for training.
//!
//! Graph choices (see `../shared/notes/tract-nnef-facts.md`, measured there):
//! - Input `[1, 3, 8·H8, 8·W8]` with symbols `H8`, `W8` (sides in units of 8): the runtime
//!   fixes the size when it loads.
//! - GroupNorm as reshape `[1, G, C/G, H, W]` → mean → centre → mean of squares → rsqrt →
//!   reshape back → affine, the form tract's optimiser fuses best.
//! - SiLU as `y · σ(y)` (tract folds it into one op). DropBlock is gone (inference).
//! - The 3×3 stride-2 transposed conv as four stride-1 phase convs, interleaved
//!   (`sub_pixel_up`), and each decoder block's first conv as one conv per concatenated
//!   part, summed (`unit_of_parts`): no nine-tap column buffer, no concatenated tensor,
//!   which lowers the peak live memory and the upsampling's time (docs/export.md,
//!   docs/performance.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use burn::module::Param;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::GroupNorm;
use burn::tensor::Tensor;

use vessel_runtime::model_file::{ModelMetadata, Precision, FORMAT};
use vessel_runtime::preprocess::{Normalization, SIZE_MULTIPLE};
use vessel_runtime::tta::Tta;

use crate::model::{ConvBlock, ConvUnit, DecoderLevel, SaUnetConfig, SaUnetV2};

/// An NNEF model in memory: entry name → bytes (`graph.nnef`, `*.dat`).
pub type NnefEntries = BTreeMap<String, Vec<u8>>;

/// NNEF `.dat` files start with this magic, and their data with byte `DAT_HEADER`.
const DAT_MAGIC: [u8; 2] = [0x4e, 0xef];
const DAT_HEADER: usize = 128;

/// Encodes a tensor in NNEF's `.dat` format: 128-byte header (magic, version 1.0, data
/// size, rank, 8 dims, bits per item, item type, vendor), then little-endian data.
/// Item types: 0 float, 3 quantised signed integer, 4 signed integer.
fn dat(shape: &[usize], count: usize, bits: u32, item_type: u16, data: &[u8]) -> Vec<u8> {
    assert!(shape.len() <= 8, "NNEF tensors have rank 8 at most");
    assert_eq!(
        shape.iter().product::<usize>(),
        count,
        "shape and data disagree"
    );
    let mut out = Vec::with_capacity(DAT_HEADER + data.len());
    out.extend_from_slice(&DAT_MAGIC);
    out.extend_from_slice(&[1, 0]); // version 1.0
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
    for i in 0..8 {
        out.extend_from_slice(&(shape.get(i).copied().unwrap_or(0) as u32).to_le_bytes());
    }
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(&item_type.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // vendor: Khronos
    out.resize(DAT_HEADER, 0);
    out.extend_from_slice(data);
    out
}

/// Decodes a `.dat` holding f32 (what [`dat_f32`] writes): shape and values, or why not.
pub(crate) fn parse_dat_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if bytes.len() < DAT_HEADER || bytes[..2] != DAT_MAGIC {
        return Err("not an NNEF tensor file (bad header)".into());
    }
    let (data_len, rank) = (word(4) as usize, word(8) as usize);
    let (bits, item_type) = (word(44), u16::from_le_bytes([bytes[48], bytes[49]]));
    if (bits, item_type) != (32, 0) || rank > 8 {
        return Err(format!(
            "not an f32 tensor ({bits}-bit items of type {item_type}, rank {rank})"
        ));
    }
    let shape: Vec<usize> = (0..rank).map(|i| word(12 + 4 * i) as usize).collect();
    let count: usize = shape.iter().product();
    if data_len != 4 * count || bytes.len() != DAT_HEADER + data_len {
        return Err(format!(
            "{} data bytes for shape {shape:?} (needs {})",
            bytes.len().saturating_sub(DAT_HEADER),
            4 * count
        ));
    }
    let values = bytes[DAT_HEADER..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    Ok((shape, values))
}

/// An f32 tensor as `.dat`.
pub fn dat_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    dat(shape, data.len(), 32, 0, &bytes)
}

fn dat_i8(shape: &[usize], data: &[i8]) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().map(|&v| v as u8).collect();
    dat(shape, data.len(), 8, 3, &bytes)
}

fn dat_i32(shape: &[usize], data: &[i32]) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    dat(shape, data.len(), 32, 4, &bytes)
}

/// The value range of one quantised conv's input activation, from calibration.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActivationRange {
    pub min: f32,
    pub max: f32,
}

/// What the writer produces.
#[derive(Clone, Debug)]
enum Mode {
    Float,
    /// f32, plus every 3×3 conv's input as an extra graph output.
    Calibration,
    /// 3×3 convs in int8 with these input ranges (one per conv input, in graph order),
    /// those at full resolution only when the scope says so.
    Int8(Vec<ActivationRange>, Int8Scope),
}

/// Which 3×3 convs an int8 export quantises.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Int8Scope {
    /// All fourteen.
    All,
    /// The ten below full resolution; the four full-resolution ones stay f32. tract's
    /// quantised conv builds its whole im2col buffer up front (9·Cin bytes a pixel), which
    /// at full resolution is the largest buffer of the run and most of its time on x86.
    BelowFullResolution,
}

impl Int8Scope {
    fn describe(self) -> &'static str {
        match self {
            Int8Scope::All => "3x3 convs int8",
            Int8Scope::BelowFullResolution => {
                "3x3 convs below full resolution int8 (full-resolution convs f32)"
            }
        }
    }
}

/// A parameter's shape and values.
pub(crate) fn values<const D: usize>(t: &Param<Tensor<D>>) -> (Vec<usize>, Vec<f32>) {
    let t = t.val();
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 parameters");
    (shape, data)
}

/// Builds the graph text line by line and collects the variables.
struct GraphWriter {
    body: String,
    entries: NnefEntries,
    next: usize,
    mode: Mode,
    /// Conv inputs written so far (indexes calibration taps and int8 ranges).
    conv_inputs: usize,
    /// Calibration: the identifier of each conv input (`None` for the graph input,
    /// whose range is known: [0, 1]).
    taps: Vec<Option<String>>,
    /// `graph.quant` lines (int8).
    quant: String,
    /// Pooling depth of what is being written: 0 at full resolution.
    level: usize,
}

impl GraphWriter {
    fn variable(&mut self, label: &str, shape: &[usize], data: &[f32]) -> String {
        self.entries
            .insert(format!("{label}.dat"), dat_f32(shape, data));
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        writeln!(
            self.body,
            "    {label} = variable<scalar>(label = '{label}', shape = [{}]);",
            dims.join(", ")
        )
        .expect("writing to a String");
        label.to_string()
    }

    /// Emits `tN = expr;` and returns `tN`.
    fn op(&mut self, expr: impl AsRef<str>) -> String {
        let id = format!("t{}", self.next);
        self.next += 1;
        writeln!(self.body, "    {id} = {};", expr.as_ref()).expect("writing to a String");
        id
    }

    fn conv(&mut self, x: &str, conv: &Conv2d, name: &str) -> String {
        let (wshape, w) = values(&conv.weight);
        let pad = wshape[2] / 2;
        let bias = conv.bias.as_ref().map(|b| values(b).1);
        self.conv_with(
            x,
            &wshape,
            &w,
            bias.as_deref(),
            name,
            [(pad, pad), (pad, pad)],
        )
    }

    /// A stride-1 f32 conv from raw weights `[Cout, Cin, kh, kw]`.
    fn conv_with(
        &mut self,
        x: &str,
        wshape: &[usize],
        w: &[f32],
        bias: Option<&[f32]>,
        name: &str,
        padding: [(usize, usize); 2],
    ) -> String {
        let w = self.variable(&format!("{name}_weight"), wshape, w);
        let b = match bias {
            Some(b) => self.variable(&format!("{name}_bias"), &[1, b.len()], b),
            None => "0.0".to_string(),
        };
        let [(top, bottom), (left, right)] = padding;
        self.op(format!(
            "conv({x}, {w}, {b}, border = 'constant', padding = [({top}, {bottom}), ({left}, {right})], \
             stride = [1, 1], dilation = [1, 1], groups = 1)"
        ))
    }

    /// The 3×3 stride-2 transposed conv (padding 1, output padding 1) written as four
    /// stride-1 convs, one per output phase, interleaved. Output row `o = 2i + k − 1`, so
    /// even rows take tap 1 of row `i`, odd rows tap 2 of row `i` and tap 0 of row `i + 1`
    /// (likewise for columns). tract's own deconv computes all nine taps' columns for every
    /// input pixel before scattering them (at full resolution the run's largest buffer);
    /// the phases need no such buffer, and the same multiply-adds.
    fn sub_pixel_up(&mut self, x: &str, up: &ConvTranspose2d, name: &str) -> String {
        // burn stores [Cin, Cout, kh, kw].
        let (s, w) = values(&up.weight);
        let (cin, cout) = (s[0], s[1]);
        assert_eq!((s[2], s[3]), (3, 3), "3x3 transposed convs");
        let (_, bias) = values(up.bias.as_ref().expect("transposed convs have a bias"));
        self.level -= 1;
        // Taps for even and odd output rows/columns, in the order the phase conv reads
        // input offsets 0, 1.
        let taps: [&[usize]; 2] = [&[1], &[2, 0]];
        let mut rows = Vec::new();
        for (py, row_taps) in taps.iter().enumerate() {
            let mut phases = Vec::new();
            for (px, col_taps) in taps.iter().enumerate() {
                let (kh, kw) = (row_taps.len(), col_taps.len());
                let mut pw = vec![0.0; cout * cin * kh * kw];
                for o in 0..cout {
                    for i in 0..cin {
                        for (a, ky) in row_taps.iter().enumerate() {
                            for (b, kx) in col_taps.iter().enumerate() {
                                pw[((o * cin + i) * kh + a) * kw + b] =
                                    w[((i * cout + o) * 3 + ky) * 3 + kx];
                            }
                        }
                    }
                }
                let phase = self.conv_with(
                    x,
                    &[cout, cin, kh, kw],
                    &pw,
                    Some(&bias),
                    &format!("{name}_phase{py}{px}"),
                    [(0, kh - 1), (0, kw - 1)],
                );
                phases.push(self.op(format!("unsqueeze({phase}, axes = [4])")));
            }
            // [1, C, H, W, 2] with the column phase innermost.
            let row = self.op(format!("concat([{}], axis = 4)", phases.join(", ")));
            rows.push(self.op(format!("unsqueeze({row}, axes = [3])")));
        }
        // [1, C, H, 2, W, 2] -> [1, C, 2H, 2W].
        let both = self.op(format!("concat([{}], axis = 3)", rows.join(", ")));
        let rows_joined = self.op(format!(
            "reshape({both}, shape = [-1], axis_start = 2, axis_count = 2)"
        ));
        self.op(format!(
            "reshape({rows_joined}, shape = [-1], axis_start = 3, axis_count = 2)"
        ))
    }

    fn group_norm_silu(&mut self, x: &str, norm: &GroupNorm, name: &str) -> String {
        let (g, c) = (norm.num_groups, norm.num_channels);
        let grouped = self.op(format!(
            "reshape({x}, shape = [{g}, {}], axis_start = 1, axis_count = 1)",
            c / g
        ));
        let mean = self.op(format!("mean_reduce({grouped}, axes = [2, 3, 4])"));
        let centred = self.op(format!("sub({grouped}, {mean})"));
        let square = self.op(format!("square({centred})"));
        let var = self.op(format!("mean_reduce({square}, axes = [2, 3, 4])"));
        let inv = self.op(format!("rsqrt(add({var}, {:?}))", norm.epsilon as f32));
        let normed = self.op(format!("mul({centred}, {inv})"));
        let flat = self.op(format!(
            "reshape({normed}, shape = [{c}], axis_start = 1, axis_count = 2)"
        ));
        let (_, gamma) = values(norm.gamma.as_ref().expect("affine GroupNorm"));
        let (_, beta) = values(norm.beta.as_ref().expect("affine GroupNorm"));
        let gamma = self.variable(&format!("{name}_gamma"), &[1, c, 1, 1], &gamma);
        let beta = self.variable(&format!("{name}_beta"), &[1, c, 1, 1], &beta);
        let y = self.op(format!("add(mul({flat}, {gamma}), {beta})"));
        self.op(format!("mul({y}, sigmoid({y}))"))
    }

    fn unit(&mut self, x: &str, unit: &ConvUnit, name: &str) -> String {
        let in_channels = unit.conv.weight.val().dims()[1];
        self.unit_of_parts(&[(x, in_channels)], unit, name)
    }

    /// A conv unit whose input is the channel concatenation of `parts` (identifier,
    /// channels). The conv is written as one conv per part, summed (`W·[a; b] = W_a·a +
    /// W_b·b`), so the concatenated tensor never exists (at full resolution the largest of
    /// its level), and each part is its own calibration tap and int8 input range.
    fn unit_of_parts(&mut self, parts: &[(&str, usize)], unit: &ConvUnit, name: &str) -> String {
        let (shape, w) = values(&unit.conv.weight);
        let (cout, cin, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
        let (_, bias) = values(unit.conv.bias.as_ref().expect("3x3 convs have a bias"));
        let quantise = match &self.mode {
            Mode::Int8(_, Int8Scope::All) => true,
            Mode::Int8(_, Int8Scope::BelowFullResolution) => self.level > 0,
            Mode::Float | Mode::Calibration => false,
        };
        let pad = kh / 2;
        let mut sum: Option<String> = None;
        let mut first_channel = 0;
        for (k, &(x, channels)) in parts.iter().enumerate() {
            let part_w: Vec<f32> = (0..cout)
                .flat_map(|o| {
                    let start = (o * cin + first_channel) * kh * kw;
                    w[start..start + channels * kh * kw].iter().copied()
                })
                .collect();
            first_channel += channels;
            // The bias goes with the first part only.
            let part_bias = (k == 0).then_some(&bias[..]);
            let conv_name = if parts.len() == 1 {
                format!("{name}_conv")
            } else {
                format!("{name}_conv{k}")
            };
            let part_shape = [cout, channels, kh, kw];
            let index = self.conv_inputs;
            self.conv_inputs += 1;
            let c = match &self.mode {
                Mode::Int8(ranges, _) if quantise => {
                    let range = ranges[index];
                    self.quantized_conv(x, &part_shape, &part_w, part_bias, &conv_name, range)
                }
                mode => {
                    if matches!(mode, Mode::Calibration) {
                        self.taps.push((x != "input").then(|| x.to_string()));
                    }
                    let padding = [(pad, pad), (pad, pad)];
                    self.conv_with(x, &part_shape, &part_w, part_bias, &conv_name, padding)
                }
            };
            sum = Some(match sum {
                None => c,
                Some(previous) => self.op(format!("add({previous}, {c})")),
            });
        }
        assert_eq!(first_channel, cin, "parts cover the conv's input channels");
        let c = sum.expect("at least one part");
        self.group_norm_silu(&c, &unit.norm, &format!("{name}_norm"))
    }

    fn quant_line(&mut self, id: &str, zero_point: i32, scale: f32, bits: u32, symmetric: bool) {
        writeln!(
            self.quant,
            "\"{id}\": zero_point_linear_quantize(zero_point = {zero_point}, scale = {scale:e}, bits = {bits}, signed = true, symmetric = {symmetric});"
        )
        .expect("writing to a String");
    }

    /// A 3×3 conv in int8: input quantised asymmetrically with its calibrated range, weights
    /// symmetrically per tensor, bias as i32 in the accumulator's scale; the i32 accumulator
    /// is typed with scale s_x·s_w so casting it to f32 dequantises it exactly. No bias:
    /// zeros (tract's quantised conv takes its bias as a tensor).
    fn quantized_conv(
        &mut self,
        x: &str,
        wshape: &[usize],
        w: &[f32],
        bias: Option<&[f32]>,
        name: &str,
        range: ActivationRange,
    ) -> String {
        let (min, max) = (range.min.min(0.0), range.max.max(0.0));
        let sx = ((max - min) / 255.0).max(1e-8);
        let zx = (-128.0 - min / sx).round().clamp(-128.0, 127.0) as i32;
        let xq = self.op(format!("tract_core_cast({x}, to = 'i8')"));
        self.quant_line(&xq, zx, sx, 8, false);

        let sw = (w.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0).max(1e-12);
        let wq: Vec<i8> = w
            .iter()
            .map(|v| (v / sw).round().clamp(-127.0, 127.0) as i8)
            .collect();
        let wlabel = format!("{name}_weight");
        self.entries
            .insert(format!("{wlabel}.dat"), dat_i8(wshape, &wq));
        let dims: Vec<String> = wshape.iter().map(|d| d.to_string()).collect();
        writeln!(
            self.body,
            "    {wlabel} = variable<scalar>(label = '{wlabel}', shape = [{}]);",
            dims.join(", ")
        )
        .expect("writing to a String");
        self.quant_line(&wlabel, 0, sw, 8, true);

        let bq: Vec<i32> = match bias {
            Some(b) => b.iter().map(|v| (v / (sx * sw)).round() as i32).collect(),
            None => vec![0; wshape[0]],
        };
        let blabel = format!("{name}_bias");
        self.entries
            .insert(format!("{blabel}.dat"), dat_i32(&[1, bq.len()], &bq));
        writeln!(
            self.body,
            "    {blabel} = variable<integer>(label = '{blabel}', shape = [1, {}]);",
            bq.len()
        )
        .expect("writing to a String");

        let pad = wshape[2] / 2;
        let acc = self.op(format!(
            "conv({xq}, {wlabel}, {blabel}, border = 'constant', padding = [({pad}, {pad}), ({pad}, {pad})], \
             stride = [1, 1], dilation = [1, 1], groups = 1)"
        ));
        self.quant_line(&acc, 0, sx * sw, 32, true);
        self.op(format!("tract_core_cast({acc}, to = 'f32')"))
    }

    fn block(&mut self, x: &str, block: &ConvBlock, name: &str) -> String {
        let first = self.unit(x, &block.first, &format!("{name}_first"));
        self.unit(&first, &block.second, &format!("{name}_second"))
    }

    fn max_pool(&mut self, x: &str) -> String {
        self.level += 1;
        self.op(format!(
            "max_pool({x}, size = [1, 1, 2, 2], border = 'ignore', \
             padding = [(0, 0), (0, 0), (0, 0), (0, 0)], stride = [1, 1, 2, 2], dilation = [1, 1, 1, 1])"
        ))
    }

    /// `gate(x) = x · σ(conv([pool_a, pool_b]))`.
    fn attention(&mut self, x: &str, a: &str, b: &str, conv: &Conv2d, name: &str) -> String {
        let pooled = self.op(format!("concat([{a}, {b}], axis = 1)"));
        let logits = self.conv(&pooled, conv, name);
        self.op(format!("mul({x}, sigmoid({logits}))"))
    }

    fn decoder(&mut self, x: &str, skip: &str, level: &DecoderLevel, name: &str) -> String {
        let d = self.sub_pixel_up(x, &level.up, &format!("{name}_up"));
        let skip_mean = self.op(format!("mean_reduce({skip}, axes = [1])"));
        let d_mean = self.op(format!("mean_reduce({d}, axes = [1])"));
        let attended = self.attention(
            skip,
            &skip_mean,
            &d_mean,
            &level.attention.conv,
            &format!("{name}_csa"),
        );
        let block_name = format!("{name}_block");
        let up_channels = level.up.weight.val().dims()[1];
        let attended_channels = level.block.first.conv.weight.val().dims()[1] - up_channels;
        let first = self.unit_of_parts(
            &[(&d, up_channels), (&attended, attended_channels)],
            &level.block.first,
            &format!("{block_name}_first"),
        );
        self.unit(&first, &level.block.second, &format!("{block_name}_second"))
    }
}

/// The f32 inference graph of `model` with its weights: input `input` `[1, 3, H, W]` (RGB,
/// normalised), output `output` `[1, 1, H, W]` vessel probabilities.
pub fn nnef_f32(model: &SaUnetV2) -> NnefEntries {
    nnef_graph(model, Mode::Float).0
}

/// The int8 graph: the 3×3 convs in `scope` quantised with the calibrated input `ranges`
/// (one per conv input, in graph order: a decoder block's first conv has two); attention convs, transposed convs, GroupNorm and
/// the head stay f32.
pub fn nnef_int8(model: &SaUnetV2, ranges: &[ActivationRange], scope: Int8Scope) -> NnefEntries {
    nnef_graph(model, Mode::Int8(ranges.to_vec(), scope)).0
}

fn nnef_graph(model: &SaUnetV2, mode: Mode) -> (NnefEntries, Vec<Option<String>>) {
    let mut g = GraphWriter {
        body: String::new(),
        entries: BTreeMap::new(),
        next: 0,
        mode: mode.clone(),
        conv_inputs: 0,
        taps: Vec::new(),
        quant: String::new(),
        level: 0,
    };
    let channels = model.enc1.first.conv.weight.val().dims()[1];
    // Sides as 8 × a symbol, so every pooling level divides exactly (tract cannot prove
    // that `2 * (H / 8) == H / 4` for an arbitrary H).
    writeln!(
        g.body,
        "    input = external<scalar>(shape = [1, {channels}, 8 * H8, 8 * W8]);"
    )
    .expect("String");
    let s1 = g.block("input", &model.enc1, "enc1");
    let p1 = g.max_pool(&s1);
    let s2 = g.block(&p1, &model.enc2, "enc2");
    let p2 = g.max_pool(&s2);
    let s3 = g.block(&p2, &model.enc3, "enc3");
    let p3 = g.max_pool(&s3);
    let b = g.unit(&p3, &model.bottleneck_in, "bottleneck_in");
    let b_mean = g.op(format!("mean_reduce({b}, axes = [1])"));
    let b_max = g.op(format!("max_reduce({b}, axes = [1])"));
    let b = g.attention(
        &b,
        &b_mean,
        &b_max,
        &model.bottleneck_attention.conv,
        "bottleneck_sa",
    );
    let b = g.unit(&b, &model.bottleneck_out, "bottleneck_out");
    let d3 = g.decoder(&b, &s3, &model.dec3, "dec3");
    let d2 = g.decoder(&d3, &s2, &model.dec2, "dec2");
    let d1 = g.decoder(&d2, &s1, &model.dec1, "dec1");
    let logits = g.conv(&d1, &model.head, "head");
    writeln!(g.body, "    output = sigmoid({logits});").expect("String");

    let outputs: Vec<String> = std::iter::once("output".to_string())
        .chain(g.taps.iter().flatten().cloned())
        .collect();
    let registry = if matches!(mode, Mode::Int8(..)) {
        "extension tract_registry tract_core;\n"
    } else {
        ""
    };
    let graph = format!(
        "version 1.0;\n\n{registry}extension tract_symbol H8;\nextension tract_symbol W8;\n\n\
         graph sa_unet_v2( input ) -> ( {} )\n{{\n{}}}\n",
        outputs.join(", "),
        g.body
    );
    g.entries.insert("graph.nnef".into(), graph.into_bytes());
    if !g.quant.is_empty() {
        g.entries.insert("graph.quant".into(), g.quant.into_bytes());
    }
    (g.entries, g.taps)
}

/// How activation ranges are taken from calibration images.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Calibration {
    /// Smallest and largest value seen.
    MinMax,
    /// The 0.01% and 99.99% percentiles of each image, averaged over images.
    Percentile,
}

/// Runs the f32 graph on `samples` (placed as the runtime places them) and returns the
/// input range of every conv unit.
pub fn calibrate(
    model: &SaUnetV2,
    samples: &[crate::data::Sample],
    input_size: u32,
    method: Calibration,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<ActivationRange>> {
    use vessel_runtime::preprocess::Placement;
    let (entries, taps) = nnef_graph(model, Mode::Calibration);
    let mut runner = vessel_runtime::engine::NnefRunner::new(&entries, input_size, input_size)?;
    let mut per_image: Vec<Vec<ActivationRange>> = Vec::new();
    let plane = (input_size * input_size) as usize;
    let mut input = vec![0.0; 3 * plane];
    for sample in samples {
        let (w, h) = sample.image.dimensions();
        let placement = Placement::in_network(w, h, input_size, input_size)?;
        placement.write_input(
            &sample.image,
            vessel_runtime::preprocess::Normalization::UnitRange,
            &mut input,
        )?;
        let mut outputs = runner.run(&input)?.into_iter().skip(1);
        let ranges = taps
            .iter()
            .map(|tap| match tap {
                None => ActivationRange { min: 0.0, max: 1.0 },
                Some(_) => {
                    let mut values = outputs.next().expect("one output per tap");
                    range_of(&mut values, method)
                }
            })
            .collect();
        per_image.push(ranges);
        bar.inc(1);
    }
    anyhow::ensure!(
        !per_image.is_empty(),
        "calibration needs at least one image"
    );
    let n = per_image.len() as f32;
    Ok((0..taps.len())
        .map(|i| match method {
            Calibration::MinMax => ActivationRange {
                min: per_image
                    .iter()
                    .map(|r| r[i].min)
                    .fold(f32::INFINITY, f32::min),
                max: per_image
                    .iter()
                    .map(|r| r[i].max)
                    .fold(f32::NEG_INFINITY, f32::max),
            },
            Calibration::Percentile => ActivationRange {
                min: per_image.iter().map(|r| r[i].min).sum::<f32>() / n,
                max: per_image.iter().map(|r| r[i].max).sum::<f32>() / n,
            },
        })
        .collect())
}

fn range_of(values: &mut [f32], method: Calibration) -> ActivationRange {
    match method {
        Calibration::MinMax => ActivationRange {
            min: values.iter().copied().fold(f32::INFINITY, f32::min),
            max: values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        },
        Calibration::Percentile => {
            let n = values.len();
            let k = ((n as f64) * 0.0001) as usize;
            let lo = *values.select_nth_unstable_by(k, f32::total_cmp).1;
            let hi = *values.select_nth_unstable_by(n - 1 - k, f32::total_cmp).1;
            ActivationRange { min: lo, max: hi }
        }
    }
}

/// Metadata for an exported model (content hash and test metrics are filled in later).
pub fn model_metadata(
    config: &SaUnetConfig,
    input_size: u32,
    threshold: f32,
    trained_on: String,
    epochs: usize,
    precision: Precision,
) -> ModelMetadata {
    use burn::module::Module;
    let parameters = SaUnetV2::new(config, &crate::backend::inference_device()).num_params();
    ModelMetadata {
        format: FORMAT.into(),
        architecture: "SA-UNetv2".into(),
        parameters,
        precision,
        input_channels: config.in_channels,
        input_size: [input_size, input_size],
        size_multiple: SIZE_MULTIPLE,
        normalization: Normalization::UnitRange,
        threshold,
        operating_point: None,
        trained_on,
        lineage: Vec::new(),
        epochs,
        calibration: None,
        test_metrics: None,
        test_metrics_tta_flips: None,
        content_hash: String::new(),
    }
}

/// The metadata's training-data line: the dataset, the run it started from when it was
/// fine-tuned (`--init-from`), and the checkpoints it is the mean of (`vessel-train average`).
/// Where a run's weights came from, for the model's `lineage`: the run's own start (the
/// checkpoint it was fine-tuned from, what that was trained on), then what its checkpoint
/// is (a mean of others, an imported file).
fn lineage(state: &crate::train::TrainState) -> Vec<String> {
    let opts = &state.options;
    let mut steps = Vec::new();
    if let Some(mean) = state.averaged_weights() {
        steps.push(mean);
    }
    if let Some(file) = &state.imported_from {
        steps.push(format!("imported from {file}"));
    }
    if let Some(source) = &opts.init_from {
        // Recorded when the run started; runs from before that was recorded: read the
        // source checkpoint as it is now.
        let origin = opts.init_origin.clone().unwrap_or_else(|| {
            crate::checkpoint::load::<crate::train::TrainState>(source)
                .map(|c| c.state.origin())
                .unwrap_or_else(|_| "a checkpoint no longer available".to_string())
        });
        steps.push(format!(
            "fine-tuned from {} (trained on {origin})",
            source.display()
        ));
    }
    steps
}

/// Shifts the head's bias so that `threshold` on the model's output marks what
/// `operating_point` marked before: σ(z + b − logit(p)) ≥ σ(logit(t)) ⇔ σ(z + b) ≥ σ(logit(p) +
/// logit(t)); with t = ½ (logit 0), exactly ⇔ σ(z + b) ≥ p. Probabilities stay monotone, so
/// AUC is unchanged.
pub fn fold_operating_point(
    model: SaUnetV2,
    operating_point: f32,
    threshold: f32,
) -> anyhow::Result<SaUnetV2> {
    if !(operating_point > 0.0 && operating_point < 1.0) {
        anyhow::bail!(
            "--operating-point must be between 0 and 1 (exclusive), got {operating_point}"
        );
    }
    shift_head_bias(model, -operating_point_shift(operating_point, threshold))
        .ok_or_else(|| anyhow::anyhow!("the model's head has no bias to shift"))
}

/// What [`fold_operating_point`] subtracts from the head's bias: logit(p) − logit(t).
pub(crate) fn operating_point_shift(operating_point: f32, threshold: f32) -> f32 {
    let logit = |p: f32| (p / (1.0 - p)).ln();
    logit(operating_point) - logit(threshold)
}

/// `model` with `delta` added to its head's bias; `None` for a head without bias. (Adding
/// −s is bit for bit subtracting s, so a fold and its undo share this.)
pub(crate) fn shift_head_bias(mut model: SaUnetV2, delta: f32) -> Option<SaUnetV2> {
    let bias = model.head.bias.take()?;
    model.head.bias = Some(Param::from_tensor(bias.val().add_scalar(delta)));
    Some(model)
}

/// What `vessel-train export` did.
pub struct ExportOutcome {
    pub metadata: ModelMetadata,
    /// The exported file's own evaluations (runtime engine) when a test set was given:
    /// without test-time augmentation, then with the one asked for.
    pub reports: Vec<crate::eval::EvalReport>,
}

/// int8 export settings: how to calibrate, and on which images.
pub struct Int8Request<'a> {
    pub method: Calibration,
    pub scope: Int8Scope,
    pub dataset: String,
    pub samples: &'a [crate::data::Sample],
}

/// Exports a checkpoint as an NNEF model at `out` (archive or directory): f32, or int8
/// calibrated on `int8.samples`. With `test`, evaluates the written file through the
/// runtime engine — exactly what the device runs — and records the metrics in its metadata.
pub fn export_checkpoint(
    checkpoint: &std::path::Path,
    out: &std::path::Path,
    int8: Option<Int8Request<'_>>,
    operating_point: Option<f32>,
    test: Option<(&str, &[crate::data::Sample])>,
    tta: vessel_runtime::tta::Tta,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<ExportOutcome> {
    use anyhow::Context;
    use vessel_runtime::model_file::{ModelFile, RecordedMetrics};

    let (predictor, state) = crate::eval::Predictor::from_checkpoint(checkpoint)?;
    let opts = &state.options;
    let model = match operating_point {
        None => predictor.model,
        Some(t) => fold_operating_point(predictor.model, t, opts.threshold)?,
    };
    let (entries, precision, calibration) = match &int8 {
        None => (nnef_f32(&model), Precision::F32, None),
        Some(req) => {
            bar.set_length(req.samples.len() as u64);
            bar.set_message("calibrating");
            let ranges = calibrate(&model, req.samples, opts.input_size, req.method, bar)?;
            bar.set_position(0);
            let how = format!(
                "{:?} over {} images of {}; {} (per-tensor symmetric weights, asymmetric activations), rest f32",
                req.method,
                req.samples.len(),
                req.dataset,
                req.scope.describe()
            );
            (
                nnef_int8(&model, &ranges, req.scope),
                Precision::Int8,
                Some(how),
            )
        }
    };
    let mut metadata = model_metadata(
        &opts.model,
        opts.input_size,
        opts.threshold,
        state.options.dataset.clone(),
        state.epochs_done,
        precision,
    );
    metadata.lineage = lineage(&state);
    metadata.calibration = calibration;
    metadata.operating_point = operating_point;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut metadata = ModelFile::write(out, entries.clone(), metadata)?;
    let mut reports = Vec::new();
    if let Some((dataset, samples)) = test {
        let mut engine = vessel_runtime::engine::Engine::load(out, None)?;
        // Without test-time augmentation always (the paper's protocol), then with it.
        let modes = if tta == Tta::None {
            vec![Tta::None]
        } else {
            vec![Tta::None, tta]
        };
        for mode in modes {
            bar.set_length(samples.len() as u64);
            bar.set_position(0);
            bar.set_message(format!("evaluating (tta {mode})"));
            let r = crate::eval::evaluate(
                &mut crate::eval::engine_predict(&mut engine),
                samples,
                dataset,
                metadata.threshold,
                mode,
                &[],
                None,
                bar,
            )?;
            let recorded = Some(RecordedMetrics {
                dataset: dataset.to_string(),
                images: r.images,
                f1_fov: r.fov.mean.f1,
                f1_whole: r.whole.mean.f1,
                mcc_fov: r.fov.mean.mcc,
                auc_fov: r.fov.mean.auc,
            });
            match mode {
                Tta::None => metadata.test_metrics = recorded,
                Tta::Flips => metadata.test_metrics_tta_flips = recorded,
            }
            reports.push(r);
        }
        // The content (and its hash) is unchanged: only the metadata gains the metrics.
        metadata = ModelFile::write(out, entries, metadata)?;
    }
    Ok(ExportOutcome { metadata, reports })
}
