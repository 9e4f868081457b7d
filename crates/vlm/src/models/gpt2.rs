//! GPT-2 as the decoder of a `VisionEncoderDecoderModel`: pre-LayerNorm blocks with causal
//! self-attention, cross-attention over the image (`add_cross_attention=True`) and an LM head
//! tied to the token embeddings.
//!
//! - Paper: "Language Models are Unsupervised Multitask Learners" (Radford et al., 2019)
//! - Original code: <https://github.com/openai/gpt-2>, `transformers/models/gpt2/modeling_gpt2.py`
//!
//! candle-transformers has no GPT-2 with cross-attention, so this file is ours. Weight names are
//! the `transformers` ones (`transformer.h.N.crossattention.q_attn`, ...); GPT-2 stores its
//! linear layers as `Conv1D`, weight `[in, out]`.

use super::{append_kv, attention, conv1d, positions, split_heads, KvCache, Linear2d, TextDecoder};
use crate::config::Gpt2Config;
use candle_core::{Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, Activation, Embedding, LayerNorm, VarBuilder};

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear2d,
    c_proj: Linear2d,
    ln_cross_attn: LayerNorm,
    q_attn: Linear2d,
    cross_c_attn: Linear2d,
    cross_c_proj: Linear2d,
    ln_2: LayerNorm,
    c_fc: Linear2d,
    mlp_proj: Linear2d,
    act: Activation,
    heads: usize,
    embd: usize,
    scale: f64,
}

impl Block {
    fn new(cfg: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        let e = cfg.n_embd;
        let inner = cfg.n_inner.unwrap_or(4 * e);
        let eps = cfg.layer_norm_epsilon;
        let mut scale = 1.0;
        if cfg.scale_attn_weights {
            scale /= ((e / cfg.n_head) as f64).sqrt();
        }
        let x = vb.pp("crossattention");
        Ok(Self {
            ln_1: layer_norm(e, eps, vb.pp("ln_1"))?,
            c_attn: conv1d(e, 3 * e, vb.pp("attn").pp("c_attn"))?,
            c_proj: conv1d(e, e, vb.pp("attn").pp("c_proj"))?,
            ln_cross_attn: layer_norm(e, eps, vb.pp("ln_cross_attn"))?,
            q_attn: conv1d(e, e, x.pp("q_attn"))?,
            cross_c_attn: conv1d(e, 2 * e, x.pp("c_attn"))?,
            cross_c_proj: conv1d(e, e, x.pp("c_proj"))?,
            ln_2: layer_norm(e, eps, vb.pp("ln_2"))?,
            c_fc: conv1d(e, inner, vb.pp("mlp").pp("c_fc"))?,
            mlp_proj: conv1d(inner, e, vb.pp("mlp").pp("c_proj"))?,
            act: cfg.activation_function,
            heads: cfg.n_head,
            embd: e,
            scale,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        image: &Tensor,
        cache: &mut super::LayerCache,
        past: usize,
    ) -> Result<Tensor> {
        let e = self.embd;
        // Causal self-attention.
        let qkv = self.c_attn.forward(&xs.apply(&self.ln_1)?)?;
        let q = split_heads(&qkv.narrow(2, 0, e)?, self.heads)?;
        let k = split_heads(&qkv.narrow(2, e, e)?, self.heads)?;
        let v = split_heads(&qkv.narrow(2, 2 * e, e)?, self.heads)?;
        let (k, v) = append_kv(&cache.self_kv, k, v)?;
        let ctx = attention(&q, &k, &v, self.scale, Some(past))?;
        cache.self_kv = Some((k, v));
        let xs = (xs + self.c_proj.forward(&ctx)?)?;
        // Cross-attention over the image.
        if cache.cross_kv.is_none() {
            let kv = self.cross_c_attn.forward(image)?;
            cache.cross_kv = Some((
                split_heads(&kv.narrow(2, 0, e)?, self.heads)?,
                split_heads(&kv.narrow(2, e, e)?, self.heads)?,
            ));
        }
        let q = split_heads(
            &self.q_attn.forward(&xs.apply(&self.ln_cross_attn)?)?,
            self.heads,
        )?;
        let ctx = match &cache.cross_kv {
            Some((k, v)) => attention(&q, k, v, self.scale, None)?,
            None => candle_core::bail!("cross-attention cache not filled"),
        };
        let xs = (xs + self.cross_c_proj.forward(&ctx)?)?;
        // Feed-forward.
        let ff = self.mlp_proj.forward(
            &self
                .c_fc
                .forward(&xs.apply(&self.ln_2)?)?
                .apply(&self.act)?,
        )?;
        xs + ff
    }
}

/// `GPT2LMHeadModel` with cross-attention (weights under `decoder.` in a vision-encoder-decoder).
pub struct Gpt2Decoder {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear2d,
    vocab: usize,
    max_positions: usize,
}

impl Gpt2Decoder {
    /// `vb` points at the `GPT2LMHeadModel` (`decoder`). `lm_head.weight` falls back to the
    /// token embeddings, which `save_pretrained` stores only once when they are tied.
    pub fn new(cfg: &Gpt2Config, vb: VarBuilder) -> Result<Self> {
        if cfg.scale_attn_by_inverse_layer_idx {
            candle_core::bail!("scale_attn_by_inverse_layer_idx is not supported");
        }
        let e = cfg.n_embd;
        let t = vb.pp("transformer");
        let wte = embedding(cfg.vocab_size, e, t.pp("wte"))?;
        let lm_weight = if vb.contains_tensor("lm_head.weight") {
            vb.get((cfg.vocab_size, e), "lm_head.weight")?
        } else {
            wte.embeddings().clone()
        };
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::new(cfg, t.pp("h").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wpe: embedding(cfg.n_positions, e, t.pp("wpe"))?,
            wte,
            blocks,
            ln_f: layer_norm(e, cfg.layer_norm_epsilon, t.pp("ln_f"))?,
            lm_head: Linear2d::from_out_in(&lm_weight, None)?,
            vocab: cfg.vocab_size,
            max_positions: cfg.n_positions,
        })
    }
}

impl TextDecoder for Gpt2Decoder {
    fn forward(&self, ids: &Tensor, image: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let past = cache.past;
        let pos = positions(past, t, ids.device())?;
        let mut xs = self
            .wte
            .forward(ids)?
            .broadcast_add(&self.wpe.forward(&pos)?)?;
        for (block, lc) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            xs = block.forward(&xs, image, lc, past)?;
        }
        cache.past += t;
        xs.apply(&self.ln_f)?.apply(&self.lm_head)
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.blocks.len())
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }
}
