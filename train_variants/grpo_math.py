"""The GRPO objective as TRL computes it, for many variants at once (pure torch).

Each function mirrors one step of TRL's ``GRPOTrainer`` (trl 1.16, the pinned version;
``tests/test_population.py`` checks the numbers against TRL itself):

* sampling: temperature, then nucleus (top-p) filtering as transformers' ``TopPLogitsWarper``
  (TRL sets ``top_k=0``, ``min_p=None``, ``repetition_penalty=1``), then one draw per row
  by inverting the CDF at a uniform the caller supplies, so each variant's samples come
  from its own random stream (:func:`sample_tokens`);
* advantages: group-relative, ``(r - mean_group) / (std_group + 1e-4)`` with the unbiased
  std of each prompt's ``num_generations`` rewards (TRL's ``scale_rewards="group"``,
  ``multi_objective_aggregation="sum_then_normalize"``; Shao et al. 2024, DeepSeekMath);
* the per-token loss: the clipped ratio ``-min(rho A, clip(rho, 1-eps, 1+eps) A)`` with
  ``rho = exp(logp - logp_old)`` (Schulman et al. 2017) plus ``beta`` times the k3 KL
  estimator ``exp(ref - logp) - (ref - logp) - 1`` (Schulman 2020) weighted by ``rho``
  (TRL's ``use_bias_correction_kl``).  With one iteration per generation (TRL's default
  ``num_iterations=1``) ``logp_old`` is ``logp`` detached: ``rho = 1`` in value, and its
  gradient is the policy gradient;
* normalisation per variant over the whole step (all its gradient-accumulation
  micro-batches): ``dapo`` divides by the variant's completion tokens, ``grpo`` averages
  each completion over its tokens and then over completions, ``dr_grpo`` divides by
  completions x ``max_completion_length`` (Liu et al. 2025), ``bnpo`` with one
  micro-batch per step is ``dapo``.
"""

from __future__ import annotations

import torch

LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo")
EPSILON = 0.2  # TRL's clip range (epsilon_high defaults to epsilon)
STD_EPS = 1e-4  # TRL adds this to the group std


def filter_logits(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Float32 logits after temperature and top-p, as transformers' warpers leave them."""
    scores = logits.float()
    if temperature != 1.0:
        scores = scores / temperature
    if top_p < 1.0:
        ordered, order = torch.sort(scores, descending=False)
        cum = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= (1 - top_p)
        drop[..., -1:] = False  # keep at least the most likely token
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float,
                  top_p: float) -> torch.Tensor:
    """One token per row, drawn by inverting the row's CDF at ``uniforms`` (in [0, 1)).

    Parameters
    ----------
    logits : (rows, vocab) tensor
    uniforms : (rows,) tensor
        One uniform per row from that row's variant's own generator, so what a row
        samples depends only on its logits and its own stream.
    temperature, top_p : float

    Returns
    -------
    (rows,) long tensor
    """
    probs = filter_logits(logits, temperature, top_p).softmax(dim=-1)
    cdf = probs.cumsum(dim=-1)
    # 1 - u lies in (0, 1]: the first token whose CDF reaches it has positive probability.
    target = (1.0 - uniforms.to(cdf)).unsqueeze(-1) * cdf[..., -1:]
    return torch.searchsorted(cdf, target).squeeze(-1).clamp(max=cdf.shape[-1] - 1)


def group_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """``(r - group mean) / (group std + 1e-4)``, rows of one prompt consecutive.

    Examples
    --------
    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4).round(decimals=2)
    tensor([ 1.5000, -0.5000, -0.5000, -0.5000])
    """
    grouped = rewards.view(-1, group)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True, unbiased=True)  # TRL's nanstd: Bessel-corrected
    return ((grouped - mean) / (std + STD_EPS)).reshape(-1)


def per_token_loss(logps: torch.Tensor, advantages: torch.Tensor,
                   ref_logps: torch.Tensor | None = None, beta: float = 0.0,
                   old_logps: torch.Tensor | None = None,
                   epsilon: float = EPSILON) -> torch.Tensor:
    """TRL's token loss for ``loss_type`` in :data:`LOSS_TYPES` (shape ``(rows, tokens)``)."""
    old = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old)
    adv = advantages.unsqueeze(1)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    loss = -torch.min(ratio * adv, clipped * adv)
    if beta != 0.0:
        d = ref_logps - logps
        loss = loss + beta * (torch.exp(d) - d - 1) * ratio
    return loss


def row_normalisers(loss_type: str, mask: torch.Tensor, variants: int,
                    max_completion_length: int) -> torch.Tensor:
    """What each row's summed token loss is divided by, from the whole step's rows.

    Parameters
    ----------
    loss_type : str
    mask : (rows, tokens) tensor
        Completion masks of every row of the step, variant-major (the same number of
        rows per variant).
    variants : int
    max_completion_length : int

    Returns
    -------
    (rows,) tensor
        For ``grpo`` the row's own token count times the variant's completions; for
        ``dapo``/``bnpo`` the variant's completion tokens; for ``dr_grpo`` the variant's
        completions times ``max_completion_length``.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    rows = mask.shape[0]
    per = rows // variants
    tokens = mask.sum(dim=1).to(torch.float64)
    if loss_type == "grpo":
        return tokens.clamp(min=1.0) * per
    if loss_type == "dr_grpo":
        return torch.full((rows,), float(per * max_completion_length), dtype=torch.float64)
    total = tokens.view(variants, per).sum(dim=1).clamp(min=1.0)
    return total.repeat_interleave(per)
