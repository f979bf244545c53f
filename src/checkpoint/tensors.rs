//! Reading safetensors files through a memory map, converting f32/bf16/f16 to f32 one tensor at a
//! time, and writing f32 tensors as f32/bf16/f16. Streaming by tensor keeps export and import at
//! one tensor (or one output shard) in memory beyond the mapped file.

use std::collections::HashMap;
use std::path::Path;

use memmap2::Mmap;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

use crate::error::{Error, Result};

/// Storage precision for exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreDtype {
    F32,
    Bf16,
    F16,
}

impl StoreDtype {
    pub fn safetensors(self) -> Dtype {
        match self {
            StoreDtype::F32 => Dtype::F32,
            StoreDtype::Bf16 => Dtype::BF16,
            StoreDtype::F16 => Dtype::F16,
        }
    }

    pub fn torch_name(self) -> &'static str {
        match self {
            StoreDtype::F32 => "float32",
            StoreDtype::Bf16 => "bfloat16",
            StoreDtype::F16 => "float16",
        }
    }

    pub fn bytes(self) -> usize {
        if self == StoreDtype::F32 { 4 } else { 2 }
    }

    /// The first of `values` (index, value) this precision cannot carry to an inference engine:
    /// NaN or infinite already, or finite but rounding to infinity (f16 holds up to 65504).
    pub fn first_unrepresentable(self, values: &[f32]) -> Option<(usize, f32)> {
        let overflows = |v: f32| match self {
            StoreDtype::F32 => false,
            StoreDtype::Bf16 => half::bf16::from_f32(v).is_infinite(),
            StoreDtype::F16 => half::f16::from_f32(v).is_infinite(),
        };
        let i = values.iter().position(|&v| !v.is_finite() || overflows(v))?;
        Some((i, values[i]))
    }

    /// Little-endian bytes of `values` in this precision (round to nearest even).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            StoreDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StoreDtype::Bf16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            StoreDtype::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }
}

/// A memory-mapped safetensors file.
pub struct MappedFile {
    map: Mmap,
    path: std::path::PathBuf,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::input(path, format!("cannot read: {e}")))?;
        // Safety: the file is only read; a concurrent writer would be a user error we cannot
        // prevent, and our own writers never modify a published file in place.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::input(path, format!("cannot map: {e}")))?;
        let mapped = MappedFile {
            map,
            path: path.to_path_buf(),
        };
        mapped.parse()?;
        Ok(mapped)
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map)
            .map_err(|e| Error::input(&self.path, format!("not a valid safetensors file: {e}")))
    }

    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.map)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }

    /// Tensor names with their shapes.
    pub fn shapes(&self) -> Result<HashMap<String, Vec<usize>>> {
        Ok(self
            .parse()?
            .iter()
            .map(|(n, v)| (n.to_string(), v.shape().to_vec()))
            .collect())
    }

    /// Every tensor's name, dtype and shape, in natural name order (`layers.2` before `layers.10`).
    pub fn tensors(&self) -> Result<Vec<(String, Dtype, Vec<usize>)>> {
        let mut all: Vec<(String, Dtype, Vec<usize>)> = self
            .parse()?
            .iter()
            .map(|(n, v)| (n.to_string(), v.dtype(), v.shape().to_vec()))
            .collect();
        all.sort_by_key(|(n, _, _)| natural_key(n));
        Ok(all)
    }

    /// One tensor as f32 (from f32, bf16 or f16 storage).
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let st = self.parse()?;
        let view = st
            .tensor(name)
            .map_err(|_| Error::input(&self.path, format!("tensor `{name}` is missing")))?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::input(
                    &self.path,
                    format!("tensor `{name}` is {other:?}; expected F32, BF16 or F16"),
                ));
            }
        };
        Ok((view.shape().to_vec(), values))
    }
}

/// Serialize `(name, shape, bytes)` tensors of one dtype with metadata into safetensors bytes.
pub fn serialize(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    dtype: Dtype,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(dtype, s.clone(), b).expect("bytes match shape");
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::Train(format!("serializing safetensors: {e}")))
}

/// Sort names so layer 10 follows layer 9: digit runs compare as numbers.
pub fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for ch in name.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
        } else {
            if !digits.is_empty() {
                key.push((std::mem::take(&mut text), digits.parse().unwrap_or(u64::MAX)));
                digits.clear();
            }
            text.push(ch);
        }
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}
