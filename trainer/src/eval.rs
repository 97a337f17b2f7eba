//! `vessel-train eval`: per-image and mean metrics of a checkpoint on a dataset, inside the
//! FOV and over the whole image, with the second human observer as a reference line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use image::{GrayImage, RgbImage};
use indicatif::ProgressBar;
use serde::Serialize;
use vessel_runtime::metrics::{Confusion, Scores};
use vessel_runtime::preprocess::{threshold_into, Normalization, Placement};
use vessel_runtime::tta::Tta;
use vessel_runtime::BinaryMask;

use crate::checkpoint;
use crate::data::Sample;
use crate::model::SaUnetV2;
use crate::train::{probabilities_of, TrainState};

/// A trained model ready for inference on whole images.
pub struct Predictor {
    pub model: SaUnetV2,
    /// The square input size the model was trained at; images that fit are placed on a
    /// canvas of this size (GroupNorm statistics depend on the padding), larger ones on the
    /// smallest canvas that holds them.
    pub input_size: u32,
    pub normalization: Normalization,
    device: Device,
}

/// Probabilities from an exported model, run by the runtime's engine exactly as on the device.
pub fn engine_predict(
    engine: &mut vessel_runtime::engine::Engine,
) -> impl FnMut(&RgbImage) -> Result<Vec<f32>> + '_ {
    move |image| Ok(engine.segment(image)?)
}

impl Predictor {
    /// As a [`PredictFn`].
    pub fn as_fn(&self) -> impl FnMut(&RgbImage) -> Result<Vec<f32>> + '_ {
        move |image| Ok(self.predict(image))
    }

    pub fn new(model: SaUnetV2, input_size: u32) -> Self {
        Self {
            model: model.valid(),
            input_size,
            normalization: Normalization::UnitRange,
            device: crate::backend::inference_device(),
        }
    }

    pub fn from_checkpoint(path: &Path) -> Result<(Self, TrainState)> {
        let loaded = checkpoint::load::<TrainState>(path)?;
        let device = crate::backend::inference_device();
        let model = loaded.load_model(SaUnetV2::new(&loaded.state.options.model, &device))?;
        let input_size = loaded.state.options.input_size;
        Ok((Self::new(model, input_size), loaded.state))
    }

    pub fn placement(&self, width: u32, height: u32) -> Placement {
        Placement::in_network(width, height, self.input_size, self.input_size)
            .unwrap_or_else(|_| Placement::smallest_for(width, height))
    }

    /// Vessel probabilities at the image's own resolution (row-major).
    pub fn predict(&self, image: &RgbImage) -> Vec<f32> {
        let (w, h) = image.dimensions();
        let p = self.placement(w, h);
        self.predict_placed(image, p)
    }

    /// Like [`predict`](Self::predict) on an explicit `net_width`×`net_height` canvas
    /// (falls back to the smallest canvas when the image does not fit).
    pub fn predict_on(&self, image: &RgbImage, net_width: u32, net_height: u32) -> Vec<f32> {
        let (w, h) = image.dimensions();
        let p = Placement::in_network(w, h, net_width, net_height)
            .unwrap_or_else(|_| Placement::smallest_for(w, h));
        self.predict_placed(image, p)
    }

    fn predict_placed(&self, image: &RgbImage, p: Placement) -> Vec<f32> {
        let mut input = vec![0.0; 3 * p.net_plane_len()];
        p.write_input(image, self.normalization, &mut input)
            .expect("buffer sized from the placement");
        let shape = [1, 3, p.net_height as usize, p.net_width as usize];
        let x = Tensor::from_data(TensorData::new(input, shape), &self.device);
        let net = probabilities_of(self.model.forward(x));
        let mut probs = vec![0.0; p.image_plane_len()];
        p.crop_plane(&net, &mut probs)
            .expect("sizes from the placement");
        probs
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct NamedScores {
    pub name: String,
    #[serde(flatten)]
    pub scores: Scores,
}

/// Mean scores over a region (FOV or whole image) and the per-image list.
#[derive(Clone, Debug, Serialize)]
pub struct RegionReport {
    #[serde(flatten)]
    pub mean: Scores,
    pub per_image: Vec<NamedScores>,
}

impl RegionReport {
    fn from_rows(rows: Vec<NamedScores>) -> Self {
        let all: Vec<Scores> = rows.iter().map(|r| r.scores).collect();
        Self {
            mean: Scores::mean(&all),
            per_image: rows,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ObserverReport {
    pub fov: RegionReport,
    pub whole: RegionReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    /// The checkpoint or exported model that was evaluated.
    pub source: Option<PathBuf>,
    pub threshold: f32,
    /// Test-time augmentation the probabilities were made with.
    pub tta: Tta,
    pub images: usize,
    pub fov_derived: bool,
    pub fov: RegionReport,
    pub whole: RegionReport,
    /// The second human observer scored against the first, where the dataset has one.
    pub second_observer: Option<ObserverReport>,
    /// Mean scores at other thresholds, from the same probabilities (`--sweep`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<SweepRow>,
}

/// Mean scores at one threshold (no AUC: it does not depend on the threshold).
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    pub threshold: f32,
    pub fov: Scores,
    pub whole: Scores,
}

/// `FROM:TO:STEP` → the thresholds from FROM to TO (inclusive) every STEP, each in (0, 1).
pub fn parse_sweep(spec: &str) -> Result<Vec<f32>> {
    let parts: Vec<f64> = spec
        .split(':')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|p: &Vec<f64>| p.len() == 3)
        .with_context(|| format!("--sweep wants FROM:TO:STEP (e.g. 0.3:0.8:0.05), got `{spec}`"))?;
    let (from, to, step) = (parts[0], parts[1], parts[2]);
    if !(0.0 < from && from <= to && to < 1.0 && step > 0.0) {
        anyhow::bail!("--sweep {spec}: need 0 < FROM <= TO < 1 and STEP > 0");
    }
    let count = ((to - from) / step + 1e-9).floor() as usize + 1;
    Ok((0..count)
        .map(|i| (from + i as f64 * step) as f32)
        .collect())
}

/// Something that maps an image to vessel probabilities at its resolution: burn's model
/// ([`Predictor`]) or an exported model in the runtime's engine.
pub type PredictFn<'a> = dyn FnMut(&RgbImage) -> Result<Vec<f32>> + 'a;

/// Scores `predict` on `samples`. With `save_dir`, writes `NAME_prob.png` (probability ×
/// 255) and `NAME_mask.png` (binary, 0/255) for each image. `sweep`: further thresholds to
/// score the same probabilities at (means only). `tta`: the copies of each image whose
/// probabilities are averaged.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    predict: &mut PredictFn<'_>,
    samples: &[Sample],
    dataset: &str,
    threshold: f32,
    tta: Tta,
    sweep: &[f32],
    save_dir: Option<&Path>,
    bar: &ProgressBar,
) -> Result<EvalReport> {
    if let Some(dir) = save_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (mut fov_rows, mut whole_rows) = (Vec::new(), Vec::new());
    let (mut obs_fov, mut obs_whole) = (Vec::new(), Vec::new());
    // Per threshold of the sweep: per-image scores inside the FOV and over the whole image.
    let mut swept: Vec<(Vec<Scores>, Vec<Scores>)> = vec![Default::default(); sweep.len()];
    for sample in samples {
        bar.set_message(sample.name.clone());
        let probs = tta
            .predict(&sample.image, &mut *predict)
            .with_context(|| format!("{}: inference failed", sample.image_path.display()))?;
        let (label, fov) = (&sample.label.data, &sample.fov.data);
        fov_rows.push(NamedScores {
            name: sample.name.clone(),
            scores: Scores::of_probabilities(&probs, label, Some(fov), threshold),
        });
        whole_rows.push(NamedScores {
            name: sample.name.clone(),
            scores: Scores::of_probabilities(&probs, label, None, threshold),
        });
        if let Some(second) = &sample.second_observer {
            obs_fov.push(NamedScores {
                name: sample.name.clone(),
                scores: Scores::of_binary(&second.data, label, Some(fov)),
            });
            obs_whole.push(NamedScores {
                name: sample.name.clone(),
                scores: Scores::of_binary(&second.data, label, None),
            });
        }
        for (&t, (fov_scores, whole_scores)) in sweep.iter().zip(&mut swept) {
            let at = |mask| {
                Scores::from_confusion(&Confusion::from_probabilities(&probs, label, mask, t), None)
            };
            fov_scores.push(at(Some(fov)));
            whole_scores.push(at(None));
        }
        if let Some(dir) = save_dir {
            save_prediction(dir, sample, &probs, threshold)?;
        }
        bar.inc(1);
    }
    let second_observer =
        (obs_fov.len() == samples.len() && !samples.is_empty()).then(|| ObserverReport {
            fov: RegionReport::from_rows(obs_fov),
            whole: RegionReport::from_rows(obs_whole),
        });
    Ok(EvalReport {
        dataset: dataset.to_string(),
        source: None,
        threshold,
        tta,
        images: samples.len(),
        fov_derived: samples.iter().any(|s| s.fov_derived),
        fov: RegionReport::from_rows(fov_rows),
        whole: RegionReport::from_rows(whole_rows),
        second_observer,
        sweep: sweep
            .iter()
            .zip(swept)
            .map(|(&threshold, (fov, whole))| SweepRow {
                threshold,
                fov: Scores::mean(&fov),
                whole: Scores::mean(&whole),
            })
            .collect(),
    })
}

fn save_prediction(dir: &Path, sample: &Sample, probs: &[f32], threshold: f32) -> Result<()> {
    let (w, h) = sample.image.dimensions();
    let prob_img = GrayImage::from_fn(w, h, |x, y| {
        image::Luma([(probs[(y * w + x) as usize] * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8])
    });
    let mut mask = vec![0u8; probs.len()];
    threshold_into(probs, threshold, &mut mask);
    let mask_img = BinaryMask::new(w, h, mask).to_gray_image();
    for (suffix, img) in [("prob", prob_img), ("mask", mask_img)] {
        let path = dir.join(format!("{}_{suffix}.png", sample.name));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .with_context(|| format!("encoding {}", path.display()))?;
        crate::checkpoint::write_atomic(&path, &png)?;
    }
    Ok(())
}

fn fmt_auc(a: Option<f64>) -> String {
    a.map_or("   -  ".into(), |v| format!("{v:.4}"))
}

fn row(name: &str, s: &Scores) -> String {
    format!(
        "{name:<12} {:.4}  {:.4}  {:.4}  {:.4}  {:.4}  {:.4}  {}\n",
        s.accuracy,
        s.sensitivity,
        s.specificity,
        s.f1,
        s.jaccard,
        s.mcc,
        fmt_auc(s.auc)
    )
}

/// The terminal table: per image, mean, and the second observer, for both regions.
pub fn format_report(r: &EvalReport) -> String {
    let mut out = format!(
        "{} — {} images, threshold {}{}{}\n",
        r.dataset,
        r.images,
        r.threshold,
        match r.tta {
            Tta::None => String::new(),
            t => format!(", {t} test-time augmentation ({} runs an image)", t.runs()),
        },
        if r.fov_derived {
            ", FOV derived from the images"
        } else {
            ""
        }
    );
    let header = "image        acc     sens    spec    F1      IoU     MCC     AUC\n";
    for (title, region, observer) in [
        (
            "inside FOV",
            &r.fov,
            r.second_observer.as_ref().map(|o| &o.fov),
        ),
        (
            "whole image",
            &r.whole,
            r.second_observer.as_ref().map(|o| &o.whole),
        ),
    ] {
        out.push_str(&format!("\n{title}\n{header}"));
        for img in &region.per_image {
            out.push_str(&row(&img.name, &img.scores));
        }
        out.push_str(&row("mean", &region.mean));
        if let Some(o) = observer {
            out.push_str(&row("2nd observer", &o.mean));
        }
    }
    if !r.sweep.is_empty() {
        out.push_str(
            "\nthreshold sweep (means)\nthreshold  F1 FOV  MCC FOV  sens FOV  spec FOV  F1 whole\n",
        );
        let best = r
            .sweep
            .iter()
            .map(|s| s.fov.f1)
            .fold(f64::NEG_INFINITY, f64::max);
        for s in &r.sweep {
            out.push_str(&format!(
                "{:<9}  {:.4}  {:.4}   {:.4}    {:.4}    {:.4}{}\n",
                format!("{:.3}", s.threshold),
                s.fov.f1,
                s.fov.mcc,
                s.fov.sensitivity,
                s.fov.specificity,
                s.whole.f1,
                if s.fov.f1 == best {
                    "  <- best F1 inside the FOV"
                } else {
                    ""
                }
            ));
        }
    }
    out
}
