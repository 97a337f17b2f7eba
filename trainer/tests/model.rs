//! Model shapes, parameter count and gradients.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Tensor};
use vessel_trainer::backend::{inference_device, training_device};
use vessel_trainer::loss::LossConfig;
use vessel_trainer::model::{SaUnetConfig, SaUnetV2};
use vessel_trainer::summary::{format_table, parameter_rows};

#[test]
fn reference_model_has_260521_parameters() {
    let model = SaUnetV2::new(&SaUnetConfig::default(), &inference_device());
    let rows = parameter_rows(&model);
    let total: usize = rows.iter().map(|r| r.count).sum();
    assert_eq!(total, 260_521);
    assert_eq!(model.num_params(), 260_521);
    // Spot-check the table: first conv, the bottleneck attention (no bias) and the head.
    assert_eq!(rows[0].path, "enc1.first.conv.weight");
    assert_eq!(rows[0].shape, vec![16, 3, 3, 3]);
    let sa: Vec<_> = rows
        .iter()
        .filter(|r| r.path.starts_with("bottleneck_attention"))
        .collect();
    assert_eq!(sa.len(), 1);
    assert_eq!(sa[0].shape, vec![1, 2, 7, 7]);
    assert!(format_table(&rows).contains("260521"));
}

#[test]
fn output_shape_matches_input_for_multiples_of_8() {
    let device = inference_device();
    let model = SaUnetV2::new(&SaUnetConfig::default(), &device).valid();
    for (n, h, w) in [(1, 8, 8), (2, 16, 24), (1, 40, 32), (1, 64, 64)] {
        let x = Tensor::<4>::random([n, 3, h, w], Distribution::Default, &device);
        let p = model.probabilities(x);
        assert_eq!(p.dims(), [n, 1, h, w]);
        let values = p.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn inference_is_deterministic_and_dropblock_only_trains() {
    let device = training_device();
    device.seed(3);
    let model = SaUnetV2::new(&SaUnetConfig::default(), &device);
    let x = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &device);
    let eval = model.valid();
    let xi = x.clone().inner();
    let a = eval.forward(xi.clone()).into_data();
    let b = eval.forward(xi).into_data();
    assert_eq!(a, b, "inference must not be stochastic");
    // In training, DropBlock changes the output between draws.
    let t1 = model.forward(x.clone()).into_data();
    let t2 = model.forward(x).into_data();
    assert_ne!(t1, t2, "DropBlock is active while training");
}

#[test]
fn loss_and_gradients_are_finite_on_all_background_labels() {
    let device = training_device();
    device.seed(5);
    let model = SaUnetV2::new(&SaUnetConfig::default(), &device);
    let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
    for labels in [
        Tensor::<4>::zeros([2, 1, 32, 32], &device),
        Tensor::<4>::ones([2, 1, 32, 32], &device),
    ] {
        for cfg in [
            LossConfig::default(),
            LossConfig {
                vessel_weight: 5.0,
                ..Default::default()
            },
        ] {
            let loss = cfg.loss(model.forward(x.clone()), labels.clone());
            let value = loss.to_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0];
            assert!(value.is_finite(), "loss {value}");
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let g: Tensor<4> = grads
                .get(model.enc1.first.conv.weight.id)
                .expect("first conv has a gradient");
            let g = g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            assert!(g.iter().all(|v| v.is_finite()));
            assert!(
                g.iter().any(|v| *v != 0.0),
                "gradient reaches the first layer"
            );
        }
    }
}

#[test]
fn loss_is_lower_for_correct_logits() {
    let device = inference_device();
    let labels = Tensor::<4>::from_floats([[[[1.0, 0.0], [0.0, 1.0]]]], &device);
    let good = Tensor::<4>::from_floats([[[[6.0, -6.0], [-6.0, 6.0]]]], &device);
    let bad = good.clone().neg();
    let cfg = LossConfig::default();
    let v = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0];
    let (lg, lb) = (v(cfg.loss(good, labels.clone())), v(cfg.loss(bad, labels)));
    assert!(
        lg < 0.02,
        "near-perfect logits give near-zero loss, got {lg}"
    );
    // BCE ≈ 6 and MCC ≈ −1 (so 1 − MCC ≈ 2): 0.5·6 + 0.5·2 ≈ 4.
    assert!((lb - 4.0).abs() < 0.05, "inverted logits, got {lb}");
}
