//! The text decoders we run ourselves, one per file, and what they share: a key/value cache whose
//! rows beam search can reorder, and scaled dot-product attention.

pub mod blip_text;
pub mod gpt2;

use candle_core::{DType, Device, Module, Result, Tensor, D};

/// Cached keys and values of one decoder layer, `[rows, heads, len, head_dim]`.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    /// Self-attention over the tokens fed so far.
    pub self_kv: Option<(Tensor, Tensor)>,
    /// Cross-attention over the image: computed on the first step, then reused.
    pub cross_kv: Option<(Tensor, Tensor)>,
}

/// Key/value cache of a whole decoder, one row per sequence being generated.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    /// Tokens already fed (the position of the next one).
    pub past: usize,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); layers],
            past: 0,
        }
    }

    /// Keeps, reorders or duplicates rows: afterwards row `i` is the old row `rows[i]`, as
    /// `transformers`' `reorder_cache` does.
    pub fn select(&mut self, rows: &[usize]) -> Result<()> {
        self.gather(rows, true)
    }

    /// [`KvCache::select`] for rows that each stay on the same image (beam search reorders
    /// beams only within an image): the image's cross-attention keys and values are then the
    /// same before and after, so only the self-attention cache is gathered. For BLIP-base that
    /// saves copying ~100 MB per step at 3 beams.
    pub fn select_within_images(&mut self, rows: &[usize]) -> Result<()> {
        self.gather(rows, false)
    }

    fn gather(&mut self, rows: &[usize], cross: bool) -> Result<()> {
        let Some(device) = self.device() else {
            return Ok(());
        };
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::new(idx.as_slice(), &device)?;
        let pick = |kv: &mut Option<(Tensor, Tensor)>| -> Result<()> {
            if let Some((k, v)) = kv {
                *kv = Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?));
            }
            Ok(())
        };
        for l in &mut self.layers {
            pick(&mut l.self_kv)?;
            if cross {
                pick(&mut l.cross_kv)?;
            }
        }
        Ok(())
    }

    fn device(&self) -> Option<Device> {
        self.layers.iter().find_map(|l| {
            l.self_kv
                .as_ref()
                .or(l.cross_kv.as_ref())
                .map(|(k, _)| k.device().clone())
        })
    }
}

/// A text decoder that reads image features through cross-attention.
pub trait TextDecoder: Send + Sync {
    /// Feeds `ids` (`[rows, t]`, u32) after the cached tokens and returns the logits of every
    /// fed position, `[rows, t, vocab]`. `image` is `[rows, patches, dim]`; it is read on the
    /// first call only, when the cross-attention keys and values are cached.
    fn forward(&self, ids: &Tensor, image: &Tensor, cache: &mut KvCache) -> Result<Tensor>;
    /// An empty cache for this decoder.
    fn new_cache(&self) -> KvCache;
    /// Vocabulary size (the logits' last dimension).
    fn vocab_size(&self) -> usize;
    /// The longest sequence its position embeddings cover.
    fn max_positions(&self) -> usize;
}

/// `[rows, len, heads * head_dim]` to `[rows, heads, len, head_dim]`.
pub(crate) fn split_heads(xs: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, d) = xs.dims3()?;
    xs.reshape((b, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// Scaled dot-product attention; `causal_past` = Some(past) masks keys after each query's own
/// position (queries sit at `past..past + t`). Returns `[rows, t, heads * head_dim]`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal_past: Option<usize>,
) -> Result<Tensor> {
    let (_, _, t, _) = q.dims4()?;
    let s = k.dim(2)?;
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(past) = causal_past {
        if t > 1 {
            let mask: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..s).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (t, s), q.device())?;
            scores = scores.broadcast_add(&mask)?;
        }
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(v)?.transpose(1, 2)?.flatten_from(D::Minus2)
}

/// A linear layer stored as GPT-2's `Conv1D`: weight `[in, out]`.
pub(crate) fn conv1d(d_in: usize, d_out: usize, vb: candle_nn::VarBuilder) -> Result<Linear2d> {
    Linear2d::from_in_out(
        vb.get((d_in, d_out), "weight")?,
        Some(vb.get(d_out, "bias")?),
    )
}

/// A `transformers` `nn.Linear` (weight `[out, in]`).
pub(crate) fn linear(d_in: usize, d_out: usize, vb: candle_nn::VarBuilder) -> Result<Linear2d> {
    Linear2d::from_out_in(
        &vb.get((d_out, d_in), "weight")?,
        Some(vb.get(d_out, "bias")?),
    )
}

/// Appends `new` (`[rows, heads, t, d]`) to a cached pair along the time axis.
pub(crate) fn append_kv(
    cached: &Option<(Tensor, Tensor)>,
    k: Tensor,
    v: Tensor,
) -> Result<(Tensor, Tensor)> {
    Ok(match cached {
        None => (k, v),
        Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
    })
}

/// Position ids `past..past + t`, shaped `[1, t]`.
pub(crate) fn positions(past: usize, t: usize, device: &Device) -> Result<Tensor> {
    Tensor::arange(past as u32, (past + t) as u32, device)?
        .to_dtype(DType::U32)?
        .unsqueeze(0)
}

/// A module applied after a residual sum: `ln(x + residual)`.
pub(crate) fn add_norm(x: &Tensor, residual: &Tensor, ln: &candle_nn::LayerNorm) -> Result<Tensor> {
    (x + residual)?.apply(ln)
}

/// A linear layer tuned for decoding's few rows: the weight is kept as `[in, out]`, contiguous,
/// so that a few rows times it stream through the weight once, and a `[rows, t, d]` input is
/// folded into `[rows * t, d]` (candle's `Linear` would broadcast its `[out, in]` weight over the
/// batch and multiply by its transposed view, both of which make gemm pack or copy the whole
/// weight on every call: 150 MB per step for GPT-2's LM head).
#[derive(Clone, Debug)]
pub struct Linear2d {
    wt: Tensor,
    bias: Option<Tensor>,
}

impl Linear2d {
    /// From a `transformers` `nn.Linear` weight, `[out, in]`.
    pub fn from_out_in(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            wt: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// From a GPT-2 `Conv1D` weight, `[in, out]`.
    pub fn from_in_out(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            wt: weight.contiguous()?,
            bias,
        })
    }

    fn forward_2d(&self, xs: &Tensor) -> Result<Tensor> {
        let y = xs.contiguous()?.matmul(&self.wt)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl Module for Linear2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match *xs.dims() {
            [b, t, d] => self
                .forward_2d(&xs.reshape((b * t, d))?)?
                .reshape((b, t, ())),
            [_, _] => self.forward_2d(xs),
            _ => candle_core::bail!("Linear2d takes 2-D or 3-D input, got {:?}", xs.dims()),
        }
    }
}
