//! Finite-difference gradient check in f64. Its own test binary on purpose: burn keeps default
//! dtype state per device, and NdArray<f32> (the other tests' backend) and NdArray<f64> share the
//! CPU device, so mixing them in one process would silently run this check in f32.

mod common;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use burn_ndarray::{NdArray, NdArrayDevice};
use colossus::checkpoint::weights;
use colossus::model::{Grok, GrokConfig};
use colossus::train::{loss::cross_entropy, params};
use common::*;

fn ids(values: &[i64], device: &NdArrayDevice) -> Tensor<F64Train, 2, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [1, values.len()]), device)
}

type F64Train = Autodiff<NdArray<f64>>;

fn f64_loss(model: &Grok<F64Train>, cfg: &GrokConfig, device: &NdArrayDevice) -> Tensor<F64Train, 1> {
    let n = REFERENCE_IDS.len();
    let out = model.forward(ids(&REFERENCE_IDS[..n - 1], device), None);
    let aux = out.aux_loss();
    let ce = cross_entropy(out.logits, ids(&REFERENCE_IDS[1..], device));
    ce + aux.mul_scalar(cfg.aux_loss_coef)
}

/// Autodiff gradients of the full loss (cross-entropy + balancing loss) match central finite
/// differences in f64 for entries of every kind of parameter: embedding, attention projections
/// (through RoPE and the soft cap), norms, router and experts. Routing decisions are piecewise
/// constant; the perturbation (1e-6) is far below the gap between competing router scores, so
/// the check runs away from ties.
#[test]
fn gradients_match_finite_differences() {
    let mut cfg = reference_model();
    cfg.aux_loss_coef = 0.3;
    cfg.init_std = 0.3;
    let device = Default::default();
    let model: Grok<F64Train> = cfg.init(7, &device);
    let params = params::list(&model);
    let values: Vec<Vec<f64>> = {
        let v = weights::snapshot(&model);
        v.into_iter()
            .map(|p| p.into_iter().map(f64::from).collect())
            .collect()
    };

    let loss = f64_loss(&model, &cfg, &device);
    let grads = colossus::train::grads::Grads::collect(&model, loss.backward());
    let analytic: Vec<Vec<f64>> = grads
        .tensors
        .into_iter()
        .map(|g| g.into_data().convert::<f64>().into_vec().unwrap())
        .collect();

    let eval = |values: &Vec<Vec<f64>>| -> f64 {
        // Load exact f64 values: f32 storage would round the perturbation away.
        let m = load_f64(cfg.init(7, &device), &params, values, &device);
        f64_loss(&m, &cfg, &device).into_scalar().elem()
    };

    let h = 1e-6;
    let mut checked = 0;
    let mut worst: f64 = 0.0;
    for (pi, p) in params.iter().enumerate() {
        let n = p.numel();
        for &j in &[0, n / 3, n - 1] {
            let mut plus = values.clone();
            plus[pi][j] += h;
            let mut minus = values.clone();
            minus[pi][j] -= h;
            let fd = (eval(&plus) - eval(&minus)) / (2.0 * h);
            let a = analytic[pi][j];
            let err = (fd - a).abs() / (fd.abs() + a.abs()).max(1e-6);
            worst = worst.max(err);
            assert!(
                err < 1e-4,
                "{}[{j}]: autodiff {a:e} vs finite difference {fd:e}",
                p.path
            );
            checked += 1;
        }
    }
    assert!(checked >= 3 * 20, "checked {checked} entries");
    eprintln!("worst relative gradient error {worst:e} over {checked} entries");
}

fn load_f64(
    model: Grok<F64Train>,
    params: &[params::ParamInfo],
    values: &[Vec<f64>],
    device: &NdArrayDevice,
) -> Grok<F64Train> {
    struct L<'a> {
        values: std::slice::Iter<'a, Vec<f64>>,
        device: NdArrayDevice,
    }
    impl ModuleMapper<F64Train> for L<'_> {
        fn map_float<const D: usize>(
            &mut self,
            param: Param<Tensor<F64Train, D>>,
        ) -> Param<Tensor<F64Train, D>> {
            let (id, t, mapper) = param.consume();
            let v = self.values.next().unwrap().clone();
            let t2 =
                Tensor::<F64Train, D>::from_data(TensorData::new(v, t.shape()), &self.device).require_grad();
            Param::from_mapped_value(id, t2, mapper)
        }
    }
    assert_eq!(params.len(), values.len());
    model.map(&mut L {
        values: values.iter(),
        device: *device,
    })
}
