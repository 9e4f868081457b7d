//! Reading PyTorch `.pth`/`.pt` checkpoints (the zip format of `torch.save` since PyTorch 1.6)
//! under the names the candle models ask for.
//!
//! Real checkpoints differ from a bare `state_dict` in three ways this undoes, so the files
//! torchvision downloads load without a conversion step:
//! - a training checkpoint nests the weights under `state_dict` (beside `epoch`, `optimizer`...);
//! - `nn.DataParallel` prefixes every name with `module.`;
//! - torchvision's own DenseNet checkpoints predate a rename and say `denselayer1.norm.1.weight`
//!   where the module now has `denselayer1.norm1.weight` (torchvision remaps them in
//!   `_load_state_dict` with the same rule as [`canonical_name`]).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::pickle::PthTensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::EncodeError;

/// The first bytes of a zip archive; the pre-1.6 pickle format starts otherwise.
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";

/// A [`VarBuilder`] over the `state_dict` in the `.pth` file at `path`.
pub fn var_builder(path: &Path, device: &Device) -> Result<VarBuilder<'static>, EncodeError> {
    let weights_err = |source| EncodeError::weights(path, source);
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| weights_err(candle_core::Error::wrap(e)))?;
    if &magic != ZIP_MAGIC {
        return Err(EncodeError::LegacyPth {
            path: path.to_path_buf(),
        });
    }
    let mut tensors = PthTensors::new(path, None).map_err(weights_err)?;
    if tensors.tensor_infos().is_empty() {
        // Not a bare state dict: a checkpoint dict holding one.
        tensors = PthTensors::new(path, Some("state_dict")).map_err(|_| {
            weights_err(candle_core::Error::Msg(
                "no tensors at the top level and no `state_dict` entry: not a PyTorch state \
                 dict or checkpoint"
                    .into(),
            ))
        })?;
    }
    let mut stored = HashMap::new();
    for name in tensors.tensor_infos().keys() {
        stored.insert(canonical_name(name), name.clone());
    }
    let backend = Renamed { tensors, stored };
    Ok(VarBuilder::from_backend(
        Box::new(backend),
        DType::F32,
        device.clone(),
    ))
}

/// The name a current torchvision module gives the tensor stored as `name`.
fn canonical_name(name: &str) -> String {
    let name = name.strip_prefix("module.").unwrap_or(name);
    let parts: Vec<&str> = name.split('.').collect();
    let n = parts.len();
    // `...denselayerN.{norm,relu,conv}.{1,2}.{weight,...}` -> `...denselayerN.{norm,conv}{1,2}.*`
    if n >= 4
        && parts[n - 4].starts_with("denselayer")
        && matches!(parts[n - 3], "norm" | "relu" | "conv")
        && matches!(parts[n - 2], "1" | "2")
        && matches!(
            parts[n - 1],
            "weight" | "bias" | "running_mean" | "running_var"
        )
    {
        let mut out = parts[..n - 3].join(".");
        out.push('.');
        out.push_str(parts[n - 3]);
        out.push_str(parts[n - 2]);
        out.push('.');
        out.push_str(parts[n - 1]);
        return out;
    }
    name.to_string()
}

/// The checkpoint's tensors under their canonical names.
struct Renamed {
    tensors: PthTensors,
    /// Canonical name -> name in the file.
    stored: HashMap<String, String>,
}

impl Renamed {
    fn stored<'a>(&'a self, name: &'a str) -> &'a str {
        self.stored.get(name).map_or(name, String::as_str)
    }
}

impl SimpleBackend for Renamed {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        SimpleBackend::get(&self.tensors, s, self.stored(name), h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        SimpleBackend::get_unchecked(&self.tensors, self.stored(name), dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.stored.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_name;

    #[test]
    fn legacy_densenet_and_data_parallel_names_are_mapped() {
        let cases = [
            (
                "features.denseblock1.denselayer1.norm.1.weight",
                "features.denseblock1.denselayer1.norm1.weight",
            ),
            (
                "features.denseblock4.denselayer32.conv.2.weight",
                "features.denseblock4.denselayer32.conv2.weight",
            ),
            (
                "module.features.denseblock2.denselayer3.norm.2.running_var",
                "features.denseblock2.denselayer3.norm2.running_var",
            ),
            ("module.fc.weight", "fc.weight"),
            // Not under a dense layer: untouched.
            (
                "features.transition1.norm.weight",
                "features.transition1.norm.weight",
            ),
            (
                "layer1.0.downsample.1.weight",
                "layer1.0.downsample.1.weight",
            ),
            ("classifier.6.bias", "classifier.6.bias"),
        ];
        for (stored, canonical) in cases {
            assert_eq!(canonical_name(stored), canonical, "{stored}");
        }
    }
}
