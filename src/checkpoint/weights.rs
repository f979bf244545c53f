//! Model weights ⇄ safetensors. Tensors are named by parameter path (`layers.0.self_attn.q_proj`)
//! and kept in burn's layout (linear weights `[in, out]`); the metadata carries the format version,
//! the step and the resolved config. Export to the Hugging Face layout is a separate step.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::train::params::ParamInfo;

/// Every float parameter's values as f32 host vectors, in `train::params` order.
pub fn snapshot<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<f32>> {
    struct Snap(Vec<Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for Snap {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.0.push(data.into_vec().expect("f32 after convert"));
        }
    }
    let mut s = Snap(Vec::new());
    module.visit(&mut s);
    s.0
}

/// Serialize named f32 tensors with string metadata into safetensors bytes.
pub fn to_safetensors(
    params: &[ParamInfo],
    values: &[Vec<f32>],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    safetensors::serialize(views(params, values), Some(metadata))
        .map_err(|e| Error::Train(format!("serializing safetensors: {e}")))
}

/// As `to_safetensors`, streamed into file `path`: no second copy of the tensors in memory,
/// which for a large model's weights and moments is the difference between fitting and not.
pub fn write_safetensors(
    params: &[ParamInfo],
    values: &[Vec<f32>],
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    safetensors::serialize_to_file(views(params, values), Some(metadata), path)
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))
}

fn views<'a>(params: &[ParamInfo], values: &'a [Vec<f32>]) -> Vec<(String, TensorView<'a>)> {
    params
        .iter()
        .zip(values)
        .map(|(p, v)| {
            let view =
                TensorView::new(Dtype::F32, p.shape.clone(), bytemuck_f32(v)).expect("shape matches data");
            (p.path.clone(), view)
        })
        .collect()
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // Safetensors is little-endian; so is every platform we build for.
    const { assert!(cfg!(target_endian = "little")) };
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Parsed safetensors file contents: named f32 tensors plus metadata.
pub struct TensorFile {
    pub metadata: HashMap<String, String>,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Read a safetensors file of f32 tensors. Errors name the file and, where it applies, the tensor.
pub fn read_safetensors(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::input(path, format!("cannot read: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::input(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::input(path, format!("not a valid safetensors file: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::input(
                path,
                format!("tensor `{name}` is {:?}; expected F32", view.dtype()),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Ok(TensorFile { metadata, tensors })
}

/// Replace every parameter of `module` with the tensor of the same path in `file`. Missing,
/// extra or mis-shaped tensors are errors naming `source` and the tensor.
pub fn load_into<B: Backend, M: Module<B>>(
    module: M,
    params: &[ParamInfo],
    mut file: TensorFile,
    source: &Path,
) -> Result<M> {
    let mut values = Vec::with_capacity(params.len());
    for p in params {
        let Some((shape, data)) = file.tensors.remove(&p.path) else {
            return Err(Error::input(source, format!("tensor `{}` is missing", p.path)));
        };
        if shape != p.shape {
            return Err(Error::input(
                source,
                format!(
                    "tensor `{}` has shape {shape:?}; the model expects {:?}",
                    p.path, p.shape
                ),
            ));
        }
        values.push(data);
    }
    if let Some(extra) = file.tensors.keys().min() {
        return Err(Error::input(
            source,
            format!("tensor `{extra}` does not belong to this model"),
        ));
    }

    struct Loader {
        values: std::vec::IntoIter<Vec<f32>>,
    }
    impl<B: Backend> ModuleMapper<B> for Loader {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let device = tensor.device();
            let require_grad = tensor.is_require_grad();
            let data = self.values.next().expect("one value per parameter");
            let mut t = Tensor::<B, D>::from_data(TensorData::new(data, shape), &device);
            if require_grad {
                t = t.require_grad();
            }
            Param::from_mapped_value(id, t, mapper)
        }
    }
    Ok(module.map(&mut Loader {
        values: values.into_iter(),
    }))
}
