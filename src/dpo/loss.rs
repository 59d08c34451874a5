//! The DPO family's losses and KTO's, as TRL 1.12 computes them (`DPOTrainer._compute_loss`,
//! `KTOTrainer._compute_loss`), each a small function of sequence log-probabilities.
//!
//! Notation: for an answer y to a prompt x, the log-ratio is log π(y|x) − log π_ref(y|x) and
//! β times it is the implicit reward (Rafailov et al., 2023, §5); Δ is the chosen answer's
//! log-ratio minus the rejected one's.

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};

use crate::config::dpo::{DpoLoss, DpoLossType, KtoLoss};

/// A batch of pairs: policy and reference log-probabilities of the chosen and the rejected
/// answers `[P]`, and the answers' token counts (for IPO's per-token mean).
pub struct PairLogps {
    pub chosen: Tensor<1>,
    pub rejected: Tensor<1>,
    pub ref_chosen: Tensor<1>,
    pub ref_rejected: Tensor<1>,
    pub chosen_tokens: Tensor<1>,
    pub rejected_tokens: Tensor<1>,
}

impl PairLogps {
    pub fn chosen_logratios(&self) -> Tensor<1> {
        self.chosen.clone() - self.ref_chosen.clone()
    }

    pub fn rejected_logratios(&self) -> Tensor<1> {
        self.rejected.clone() - self.ref_rejected.clone()
    }
}

/// The loss of each pair `[P]` for `config.loss_type`.
pub fn dpo_loss(config: &DpoLoss, pairs: &PairLogps) -> Tensor<1> {
    let (chosen, rejected) = (pairs.chosen_logratios(), pairs.rejected_logratios());
    let beta = config.beta;
    match config.loss_type {
        DpoLossType::Sigmoid => sigmoid_loss(chosen - rejected, beta),
        DpoLossType::Hinge => hinge_loss(chosen - rejected, beta),
        DpoLossType::Ipo => {
            let per_token = |logratios: Tensor<1>, tokens: &Tensor<1>| {
                logratios / tokens.clone().clamp_min(1.0)
            };
            let delta = per_token(chosen, &pairs.chosen_tokens)
                - per_token(rejected, &pairs.rejected_tokens);
            ipo_loss(delta, beta)
        }
        DpoLossType::Robust => robust_loss(chosen - rejected, beta, config.label_smoothing),
    }
}

/// DPO (Rafailov et al., 2023, Eq. 7): −log σ(β·Δ).
pub fn sigmoid_loss(delta: Tensor<1>, beta: f64) -> Tensor<1> {
    -log_sigmoid(delta.mul_scalar(beta))
}

/// SLiC's hinge (Zhao et al., 2023): max(0, 1 − β·Δ).
pub fn hinge_loss(delta: Tensor<1>, beta: f64) -> Tensor<1> {
    relu(delta.mul_scalar(-beta).add_scalar(1.0))
}

/// IPO (Azar et al., 2023, Eq. 17) with β as τ: (Δ̄ − 1/(2τ))², where Δ̄ takes each answer's
/// log-ratio per token (TRL's normalisation, confirmed with the paper's authors).
pub fn ipo_loss(per_token_delta: Tensor<1>, beta: f64) -> Tensor<1> {
    per_token_delta.sub_scalar(1.0 / (2.0 * beta)).powi_scalar(2)
}

/// Robust DPO (Chowdhury et al., 2024, Eq. 7), unbiased when a fraction ε of the labels is
/// flipped: (−(1 − ε)·log σ(β·Δ) + ε·log σ(−β·Δ)) / (1 − 2ε).
pub fn robust_loss(delta: Tensor<1>, beta: f64, epsilon: f64) -> Tensor<1> {
    let z = delta.mul_scalar(beta);
    let clean = log_sigmoid(z.clone()).mul_scalar(-(1.0 - epsilon));
    let flipped = log_sigmoid(-z).mul_scalar(epsilon);
    (clean + flipped).div_scalar(1.0 - 2.0 * epsilon)
}

/// KTO's reference point z₀ (Ethayarajh et al., 2024, §4.1): the mean log-ratio of answers
/// paired with other rows' prompts, clamped at 0; a number, so no gradient flows through it.
pub fn kto_kl(policy_kl_logps_sum: f64, reference_kl_logps_sum: f64, count: usize) -> f64 {
    ((policy_kl_logps_sum - reference_kl_logps_sum) / count.max(1) as f64).max(0.0)
}

/// KTO's loss of each row `[B]` (Eq. 7, TRL's weights): with r the log-ratio, a desirable
/// answer costs λ_D·(1 − σ(β·(r − z₀))), an undesirable one λ_U·(1 − σ(β·(z₀ − r))).
/// `desirable` is 1 or 0 per row.
pub fn kto_loss(
    config: &KtoLoss,
    logratios: Tensor<1>,
    desirable: Tensor<1>,
    kl: f64,
) -> Tensor<1> {
    let beta = config.beta;
    let gain = logratios.sub_scalar(kl).mul_scalar(beta); // β·(r − z₀)
    let chosen = -sigmoid(gain.clone()).sub_scalar(1.0);
    let rejected = -sigmoid(-gain).sub_scalar(1.0);
    let undesirable = -desirable.clone().sub_scalar(1.0);
    chosen.mul_scalar(config.desirable_weight) * desirable
        + rejected.mul_scalar(config.undesirable_weight) * undesirable
}

#[cfg(test)]
mod tests {
    //! Golden values from TRL 1.12's formulas in PyTorch (float64):
    //!
    //! ```python
    //! c  = torch.tensor([-5.0, -7.5, -3.25, -10.0]); r  = torch.tensor([-6.0, -7.0, -9.5, -4.0])
    //! rc = torch.tensor([-5.5, -7.0, -4.0, -9.0]);   rr = torch.tensor([-5.0, -7.25, -8.0, -5.0])
    //! lc = torch.tensor([3, 5, 2, 8.]);              lr = torch.tensor([4, 5, 6, 2.])
    //! beta, eps = 0.1, 0.1; d = (c - rc) - (r - rr)
    //! -F.logsigmoid(beta * d)                                    # sigmoid
    //! torch.relu(1 - beta * d)                                   # hinge
    //! ((c - rc) / lc - (r - rr) / lr - 1 / (2 * beta)) ** 2      # ipo
    //! (-(1 - eps) * F.logsigmoid(beta * d) + eps * F.logsigmoid(-beta * d)) / (1 - 2 * eps)  # robust
    //! ```
    use super::*;

    fn device() -> Device {
        crate::device::DeviceSpec::Cpu.device().unwrap()
    }

    fn t(values: [f32; 4]) -> Tensor<1> {
        Tensor::from_floats(values, &device())
    }

    fn assert_close(got: Tensor<1>, want: &[f64]) {
        let got = got.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    fn pairs() -> PairLogps {
        PairLogps {
            chosen: t([-5.0, -7.5, -3.25, -10.0]),
            rejected: t([-6.0, -7.0, -9.5, -4.0]),
            ref_chosen: t([-5.5, -7.0, -4.0, -9.0]),
            ref_rejected: t([-5.0, -7.25, -8.0, -5.0]),
            chosen_tokens: t([3.0, 5.0, 2.0, 8.0]),
            rejected_tokens: t([4.0, 5.0, 6.0, 2.0]),
        }
    }

    fn loss(loss_type: DpoLossType, label_smoothing: f64) -> Tensor<1> {
        dpo_loss(&DpoLoss { loss_type, beta: 0.1, label_smoothing }, &pairs())
    }

    #[test]
    fn dpo_losses_match_trl() {
        let sigmoid =
            [0.6209570477895321, 0.7313501408267951, 0.5869620020497037, 0.7981388693815918];
        assert_close(loss(DpoLossType::Sigmoid, 0.0), &sigmoid);
        assert_close(loss(DpoLossType::Hinge, 0.0), &[0.85, 1.075, 0.775, 1.2]);
        let ipo = [21.006944444444443, 26.522500000000004, 19.140625, 31.640625];
        assert_close(loss(DpoLossType::Ipo, 0.0), &ipo);
        let robust =
            [0.602207047789532, 0.7407251408267951, 0.5588370020497038, 0.8231388693815919];
        assert_close(loss(DpoLossType::Robust, 0.1), &robust);
        // ε = 0 makes robust DPO plain DPO; the hinge is flat past the margin.
        assert_close(loss(DpoLossType::Robust, 0.0), &sigmoid);
        assert_close(hinge_loss(t([-5.0, 5.0, 0.0, 10.0]), 0.5), &[3.5, 0.0, 1.0, 0.0]);
    }

    /// ```python
    /// lp  = torch.tensor([-5.0, -7.5, -3.25, -10.0]); ref = torch.tensor([-5.5, -7.0, -4.0, -9.0])
    /// lab = torch.tensor([True, False, True, False])
    /// klp = torch.tensor([-6.0, -8.0, -4.5, -9.5]);   klr = torch.tensor([-7.5, -8.9, -5.0, -10.25])
    /// kl = (klp - klr).mean().clamp(min=0)                                    # 0.9125
    /// ch = 1 - torch.sigmoid(beta * ((lp - ref)[lab] - kl))
    /// rj = 1 - torch.sigmoid(beta * (kl - (lp - ref)[~lab]))
    /// torch.cat((dw * ch, uw * rj)).nanmean()             # dw, uw = 1, 1: 0.48286; 1, 1.5: 0.59750
    /// ```
    #[test]
    fn kto_loss_and_reference_point_match_trl() {
        let kl = kto_kl(-6.0 - 8.0 - 4.5 - 9.5, -7.5 - 8.9 - 5.0 - 10.25, 4);
        assert!((kl - 0.9125).abs() < 1e-12);
        assert_eq!(kto_kl(-28.0, -27.65, 4), 0.0, "clamped at 0");
        let logratios = t([-5.0, -7.5, -3.25, -10.0]) - t([-5.5, -7.0, -4.0, -9.0]);
        let desirable = t([1.0, 0.0, 1.0, 0.0]);
        let config = KtoLoss { beta: 0.1, desirable_weight: 1.0, undesirable_weight: 1.0 };
        let losses = kto_loss(&config, logratios.clone(), desirable.clone(), kl);
        let per_row =
            [0.5103110379684999, 0.4647460947263733, 0.5040624106062017, 0.45233270365925593];
        assert_close(losses.clone(), &per_row);
        assert_close(losses.mean(), &[0.4828630617400827]);
        let weighted = KtoLoss { undesirable_weight: 1.5, ..config };
        assert_close(kto_loss(&weighted, logratios, desirable, kl).mean(), &[0.5974979115382864]);
    }
}
