//! All of a model's parameters in one flat buffer, with their gradients in another.
//!
//! The fused optimisers in [`crate::optim`] update one slice; layers borrow their parameters as
//! sub-slices by [`ParamId`]. Names follow the PyTorch modules (`lstm.weight_ih_l0`) so
//! checkpoints map 1:1.

use crate::kernels::KernelError;
use rand::Rng;
use std::ops::Range;

/// Handle of one parameter tensor inside a [`ParamSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(usize);

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// Flat parameter and gradient buffers with named, shaped views.
#[derive(Clone, Debug, Default)]
pub struct ParamSet {
    entries: Vec<Entry>,
    /// Every parameter, concatenated in registration order.
    pub values: Vec<f32>,
    /// Gradients, same layout as `values`.
    pub grads: Vec<f32>,
}

impl ParamSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a zero-initialised parameter; names must be unique.
    pub fn add(&mut self, name: &str, shape: &[usize]) -> Result<ParamId, KernelError> {
        if self.entries.iter().any(|e| e.name == name) {
            return Err(KernelError::Invalid(format!(
                "duplicate parameter name {name}"
            )));
        }
        let n: usize = shape.iter().product();
        let start = self.values.len();
        self.values.resize(start + n, 0.0);
        self.grads.resize(start + n, 0.0);
        self.entries.push(Entry {
            name: name.to_string(),
            shape: shape.to_vec(),
            range: start..start + n,
        });
        Ok(ParamId(self.entries.len() - 1))
    }

    /// Total number of scalars.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no parameter is registered.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Looks a parameter up by name.
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.entries
            .iter()
            .position(|e| e.name == name)
            .map(ParamId)
    }

    /// `(name, shape)` of every parameter in buffer order.
    pub fn names(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), e.shape.as_slice()))
    }

    /// Range of a parameter inside [`ParamSet::values`].
    pub fn range(&self, id: ParamId) -> Range<usize> {
        self.entries[id.0].range.clone()
    }

    /// A parameter's values.
    pub fn value(&self, id: ParamId) -> &[f32] {
        &self.values[self.range(id)]
    }

    /// A parameter's values, mutably (initialisation, loading).
    pub fn value_mut(&mut self, id: ParamId) -> &mut [f32] {
        let r = self.range(id);
        &mut self.values[r]
    }

    /// Fills a parameter with `U(-bound, bound)`, PyTorch's default for Linear/LSTM/GRU.
    pub fn init_uniform(&mut self, id: ParamId, bound: f32, rng: &mut impl Rng) {
        for v in self.value_mut(id) {
            *v = rng.random_range(-bound..=bound);
        }
    }

    /// Zeroes every gradient.
    pub fn zero_grads(&mut self) {
        self.grads.fill(0.0);
    }

    /// Read-only values plus the gradient buffer split into one mutable slice per parameter, so
    /// a backward pass can hold several parameters' gradients at once.
    pub fn split(&mut self) -> (Values<'_>, GradViews<'_>) {
        let mut out = Vec::with_capacity(self.entries.len());
        let mut rest: &mut [f32] = &mut self.grads;
        for e in &self.entries {
            let (head, tail) = rest.split_at_mut(e.range.len());
            out.push(Some(head));
            rest = tail;
        }
        let values = Values {
            data: &self.values,
            entries: &self.entries,
        };
        (values, GradViews(out))
    }

    /// The whole gradient buffer (clipping, scaling).
    pub fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// The whole gradient buffer.
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// The whole value buffer.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Values and the optimiser's view: `(values, grads)` as two flat slices.
    pub fn flat_mut(&mut self) -> (&mut [f32], &[f32]) {
        (&mut self.values, &self.grads)
    }
}

/// Read-only view of all parameter values, indexed by [`ParamId`].
#[derive(Clone, Copy, Debug)]
pub struct Values<'a> {
    data: &'a [f32],
    entries: &'a [Entry],
}

impl<'a> Values<'a> {
    /// A parameter's values.
    pub fn get(&self, id: ParamId) -> &'a [f32] {
        &self.data[self.entries[id.0].range.clone()]
    }
}

/// Per-parameter gradient slices from [`ParamSet::split`]; each can be taken once.
#[derive(Debug)]
pub struct GradViews<'a>(Vec<Option<&'a mut [f32]>>);

impl<'a> GradViews<'a> {
    /// Takes the gradient slice of `id`; an error if it was already taken.
    pub fn take(&mut self, id: ParamId) -> Result<&'a mut [f32], KernelError> {
        self.0
            .get_mut(id.0)
            .and_then(Option::take)
            .ok_or_else(|| KernelError::Invalid(format!("gradient {id:?} taken twice")))
    }
}
