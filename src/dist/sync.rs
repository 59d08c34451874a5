//! What DDP does around an optimizer step: rank 0's weights to every rank at the start, and
//! the gradients summed over ranks before clipping, in flat buckets of ~25 MB (one collective
//! per bucket rather than one per tensor).

use anyhow::{Result, anyhow};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use super::{Reduce, group, lost, max};

/// DDP's default bucket size.
const BUCKET_BYTES: usize = 25 << 20;

/// Sums every parameter's gradient over the ranks (each rank's loss is already its share of
/// the global batch's mean, so the sum is the global gradient). A parameter that has a
/// gradient on any rank gets one on every rank (zeros where it had none), so every rank
/// updates the same parameters. Nothing happens in a single process.
pub fn all_reduce_gradients<M: Module>(model: &M, grads: &mut GradientsParams) -> Result<()> {
    let Some(group) = group() else {
        return Ok(());
    };
    let mut present = Present { grads, flags: Vec::new() };
    model.visit(&mut present);
    let mut flags = present.flags;
    max(&mut flags)?;
    let mut take = Take { grads, flags: &flags, index: 0, flat: Vec::new() };
    model.visit(&mut take);
    let reduced = reduce_in_buckets(take.flat, |bucket| group.all_reduce(bucket, Reduce::Sum))?;
    model.visit(&mut Put { grads, flags: &flags, index: 0, pieces: reduced.into_iter() });
    Ok(())
}

/// Gives every rank rank 0's parameter values (weights initialised or loaded differently on
/// another machine would otherwise drift apart unnoticed).
pub fn broadcast_parameters<M: Module>(model: M) -> Result<M> {
    let Some(group) = group() else {
        return Ok(model);
    };
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    let received = reduce_in_buckets(values.0, |bucket| group.broadcast(bucket, 0))?;
    Ok(model.map(&mut Replace { pieces: received.into_iter() }))
}

/// Fails when this rank's parameters are not the other ranks' (as after a run whose ranks ran
/// different code or data): compares a checksum of every parameter across ranks.
pub fn check_replicas<M: Module>(model: &M) -> Result<()> {
    if group().is_none() {
        return Ok(());
    }
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    let flat = Tensor::cat(values.0, 0);
    let sum = flat.clone().sum().into_scalar::<f32>() as f64;
    let squares = flat.square().sum().into_scalar::<f32>() as f64;
    // Maxima of (x, −x) give every rank the largest and smallest checksum.
    let mut spread = [sum, squares, -sum, -squares];
    max(&mut spread)?;
    let differ = |high: f64, low: f64| (high - low).abs() > 1e-5 * high.abs().max(1.0);
    if differ(spread[0], -spread[2]) || differ(spread[1], -spread[3]) {
        return Err(anyhow!(
            "rank {}: the ranks' weights differ after training (checksums {} … {}); the checkpoint is rank 0's\nhint: every rank must run the same rlhf, config and data",
            super::rank(),
            -spread[2],
            spread[0]
        ));
    }
    Ok(())
}

/// Runs `collective` over `flat` tensors packed into buckets and returns them unpacked, in
/// order.
fn reduce_in_buckets(
    flat: Vec<Tensor<1>>,
    collective: impl Fn(Tensor<1>) -> Result<Tensor<1>>,
) -> Result<Vec<Tensor<1>>> {
    let mut out = Vec::with_capacity(flat.len());
    let mut bucket: Vec<Tensor<1>> = Vec::new();
    let mut bytes = 0;
    let flush = |bucket: &mut Vec<Tensor<1>>, out: &mut Vec<Tensor<1>>| -> Result<()> {
        if bucket.is_empty() {
            return Ok(());
        }
        let sizes: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
        let joined = collective(Tensor::cat(std::mem::take(bucket), 0)).map_err(lost)?;
        let mut at = 0;
        for size in sizes {
            out.push(joined.clone().slice(at..at + size));
            at += size;
        }
        Ok(())
    };
    for tensor in flat {
        bytes += tensor.dims()[0] * 4;
        bucket.push(tensor);
        if bytes >= BUCKET_BYTES {
            flush(&mut bucket, &mut out)?;
            bytes = 0;
        }
    }
    flush(&mut bucket, &mut out)?;
    Ok(out)
}

/// 1 for each float parameter with a gradient, 0 without, in visiting order.
struct Present<'a> {
    grads: &'a GradientsParams,
    flags: Vec<f64>,
}

impl ModuleVisitor for Present<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.flags.push(self.grads.get::<D>(param.id).is_some() as u8 as f64);
    }
}

/// Removes the flagged gradients (zeros for those this rank lacks), flattened.
struct Take<'a> {
    grads: &'a mut GradientsParams,
    flags: &'a [f64],
    index: usize,
    flat: Vec<Tensor<1>>,
}

impl ModuleVisitor for Take<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let flagged = self.flags[self.index] > 0.0;
        self.index += 1;
        if !flagged {
            return;
        }
        let grad = self.grads.remove::<D>(param.id).unwrap_or_else(|| {
            let value = param.val().inner();
            Tensor::zeros(value.dims(), &value.device())
        });
        let n: usize = grad.dims().iter().product();
        self.flat.push(grad.reshape([n]));
    }
}

/// Registers the reduced gradients back, shaped as their parameters.
struct Put<'a, I> {
    grads: &'a mut GradientsParams,
    flags: &'a [f64],
    index: usize,
    pieces: I,
}

impl<I: Iterator<Item = Tensor<1>>> ModuleVisitor for Put<'_, I> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let flagged = self.flags[self.index] > 0.0;
        self.index += 1;
        if flagged {
            let piece = self.pieces.next().expect("one reduced gradient per flagged parameter");
            self.grads.register::<D>(param.id, piece.reshape(param.val().dims()));
        }
    }
}

/// Every float parameter's value, flattened.
struct Values(Vec<Tensor<1>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val().inner();
        let n: usize = value.dims().iter().product();
        self.0.push(value.reshape([n]));
    }
}

/// Puts received values into the parameters, keeping whether each is on the autodiff device
/// and tracks gradients.
struct Replace<I> {
    pieces: I,
}

impl<I: Iterator<Item = Tensor<1>>> ModuleMapper for Replace<I> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let piece = self.pieces.next().expect("one received value per parameter");
        let value = piece.reshape(tensor.dims());
        let value = match (tensor.is_autodiff(), tensor.is_require_grad()) {
            (true, true) => Tensor::from_inner(value).require_grad(),
            (true, false) => Tensor::from_inner(value),
            (false, _) => value,
        };
        Param::from_mapped_value(id, value, mapper)
    }
}
