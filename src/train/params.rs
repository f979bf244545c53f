//! The model's parameters as a flat list in traversal order (which is fixed by the module tree):
//! dotted paths, shapes, and whether weight decay applies. Gradients, optimizer moments and
//! checkpoints are all indexed by this order and named by these paths.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// e.g. `layers.0.self_attn.q_proj`
    pub path: String,
    pub shape: Vec<usize>,
    /// AdamW decays matrices (embedding, projections, router, experts) and not the norm scales:
    /// decaying a scale pulls it toward 0, which changes what the norm does rather than
    /// regularising.
    pub decay: bool,
}

impl ParamInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every float parameter of `module`, in visit order.
pub fn list<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamInfo> {
    struct Lister {
        stack: Vec<String>,
        out: Vec<ParamInfo>,
    }
    impl<B: Backend> ModuleVisitor<B> for Lister {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let shape = param.lazy_shape().dims::<D>().to_vec();
            self.out.push(ParamInfo {
                path: self.stack.join("."),
                decay: D >= 2,
                shape,
            });
        }
    }
    let mut lister = Lister {
        stack: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut lister);
    lister.out
}

/// The same list from the config alone, without building the model.
pub fn list_from_config(c: &crate::model::GrokConfig) -> Vec<ParamInfo> {
    crate::model::grok::param_shapes(c)
        .into_iter()
        .map(|(path, shape)| ParamInfo {
            decay: shape.len() >= 2,
            path,
            shape,
        })
        .collect()
}
