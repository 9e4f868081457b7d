//! BLIP's text decoder (`BlipTextLMHeadModel`): a BERT decoder with cross-attention over the image
//! patches, post-LayerNorm, and an MLM-style prediction head.
//!
//! - Paper: "BLIP: Bootstrapping Language-Image Pre-training", <https://arxiv.org/abs/2201.12086>
//! - Original code: <https://github.com/salesforce/BLIP>, `transformers/models/blip/modeling_blip_text.py`
//!
//! candle-transformers has this model (`blip_text`), but its key/value cache lives inside the
//! layers, cannot be reordered, and assumes one sequence; beam search over a batch needs a cache
//! it can gather rows of, so this file keeps the same weights and names with an external
//! [`KvCache`].

use super::{
    add_norm, append_kv, attention, linear, positions, split_heads, KvCache, Linear2d, TextDecoder,
};
use crate::config::BlipTextConfig;
use candle_core::{Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, Activation, Embedding, LayerNorm, VarBuilder};

struct Attention {
    query: Linear2d,
    key: Linear2d,
    value: Linear2d,
    dense: Linear2d,
    ln: LayerNorm,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn new(cfg: &BlipTextConfig, kv_dim: usize, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let s = vb.pp("self");
        let o = vb.pp("output");
        Ok(Self {
            query: linear(h, h, s.pp("query"))?,
            key: linear(kv_dim, h, s.pp("key"))?,
            value: linear(kv_dim, h, s.pp("value"))?,
            dense: linear(h, h, o.pp("dense"))?,
            ln: layer_norm(h, cfg.layer_norm_eps, o.pp("LayerNorm"))?,
            heads: cfg.num_attention_heads,
            scale: 1.0 / ((h / cfg.num_attention_heads) as f64).sqrt(),
        })
    }

    fn project_kv(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            split_heads(&self.key.forward(xs)?, self.heads)?,
            split_heads(&self.value.forward(xs)?, self.heads)?,
        ))
    }

    /// Self-attention: appends this step's keys and values to `kv`.
    fn forward_self(
        &self,
        xs: &Tensor,
        kv: &mut Option<(Tensor, Tensor)>,
        past: usize,
    ) -> Result<Tensor> {
        let q = split_heads(&self.query.forward(xs)?, self.heads)?;
        let (k, v) = self.project_kv(xs)?;
        let (k, v) = append_kv(kv, k, v)?;
        let ctx = attention(&q, &k, &v, self.scale, Some(past))?;
        *kv = Some((k, v));
        add_norm(&self.dense.forward(&ctx)?, xs, &self.ln)
    }

    /// Cross-attention over the image: keys and values are computed once and cached.
    fn forward_cross(
        &self,
        xs: &Tensor,
        image: &Tensor,
        kv: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        if kv.is_none() {
            *kv = Some(self.project_kv(image)?);
        }
        let q = split_heads(&self.query.forward(xs)?, self.heads)?;
        let ctx = match kv {
            Some((k, v)) => attention(&q, k, v, self.scale, None)?,
            None => candle_core::bail!("cross-attention cache not filled"),
        };
        add_norm(&self.dense.forward(&ctx)?, xs, &self.ln)
    }
}

struct Layer {
    attention: Attention,
    crossattention: Attention,
    intermediate: Linear2d,
    act: Activation,
    output: Linear2d,
    output_ln: LayerNorm,
}

impl Layer {
    fn new(cfg: &BlipTextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            attention: Attention::new(cfg, cfg.hidden_size, vb.pp("attention"))?,
            crossattention: Attention::new(cfg, cfg.encoder_hidden_size, vb.pp("crossattention"))?,
            intermediate: linear(
                cfg.hidden_size,
                cfg.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            act: cfg.hidden_act,
            output: linear(
                cfg.intermediate_size,
                cfg.hidden_size,
                vb.pp("output").pp("dense"),
            )?,
            output_ln: layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("output").pp("LayerNorm"),
            )?,
        })
    }
}

/// `BlipTextLMHeadModel` (weights under `text_decoder.` in a `BlipForConditionalGeneration`).
pub struct BlipTextDecoder {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    embeddings_ln: LayerNorm,
    layers: Vec<Layer>,
    head_dense: Linear2d,
    head_act: Activation,
    head_ln: LayerNorm,
    decoder: Linear2d,
    vocab: usize,
    max_positions: usize,
}

impl BlipTextDecoder {
    /// `vb` points at `text_decoder`. The output projection is tied to the word embeddings
    /// when the checkpoint leaves `cls.predictions.decoder.weight` out (as `transformers` 5 does).
    pub fn new(cfg: &BlipTextConfig, vb: VarBuilder) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let bert = vb.pp("bert");
        let emb = bert.pp("embeddings");
        let word_embeddings = embedding(v, h, emb.pp("word_embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, bert.pp("encoder").pp("layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let pred = vb.pp("cls").pp("predictions");
        let weight = if pred.contains_tensor("decoder.weight") {
            pred.get((v, h), "decoder.weight")?
        } else {
            word_embeddings.embeddings().clone()
        };
        let bias = if pred.contains_tensor("bias") {
            pred.get(v, "bias")?
        } else {
            pred.get(v, "decoder.bias")?
        };
        Ok(Self {
            position_embeddings: embedding(
                cfg.max_position_embeddings,
                h,
                emb.pp("position_embeddings"),
            )?,
            embeddings_ln: layer_norm(h, cfg.layer_norm_eps, emb.pp("LayerNorm"))?,
            word_embeddings,
            layers,
            head_dense: linear(h, h, pred.pp("transform").pp("dense"))?,
            head_act: cfg.hidden_act,
            head_ln: layer_norm(h, cfg.layer_norm_eps, pred.pp("transform").pp("LayerNorm"))?,
            decoder: Linear2d::from_out_in(&weight, Some(bias))?,
            vocab: v,
            max_positions: cfg.max_position_embeddings,
        })
    }
}

impl TextDecoder for BlipTextDecoder {
    fn forward(&self, ids: &Tensor, image: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let past = cache.past;
        let pos = positions(past, t, ids.device())?;
        let mut xs = self
            .word_embeddings
            .forward(ids)?
            .broadcast_add(&self.position_embeddings.forward(&pos)?)?
            .apply(&self.embeddings_ln)?;
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter_mut()) {
            xs = layer.attention.forward_self(&xs, &mut lc.self_kv, past)?;
            xs = layer
                .crossattention
                .forward_cross(&xs, image, &mut lc.cross_kv)?;
            let ff = layer
                .output
                .forward(&layer.intermediate.forward(&xs)?.apply(&layer.act)?)?;
            xs = add_norm(&ff, &xs, &layer.output_ln)?;
        }
        cache.past += t;
        xs.apply(&self.head_dense)?
            .apply(&self.head_act)?
            .apply(&self.head_ln)?
            .apply(&self.decoder)
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }
}
