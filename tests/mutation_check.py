"""Mutation check: can the test suite fail?

A green suite proves little unless its tests would go red on a real bug. Each entry of ``MUTATIONS`` is one
small bug of the kind a careless refactor introduces: an exact ``old`` snippet of a file under
src/mambaprune/ replaced by ``new``, plus the few tests that should catch it. For each mutation the script
edits the file, runs those tests (pytest in a subprocess, with a timeout), restores the file (always: also
on Ctrl-C or an error) and prints one line:

    KILLED    the tests failed, as they should
    SURVIVED  the tests still passed: a gap in the tests (or a harmless mutation, to be replaced)
    TIMEOUT   the tests ran past the time limit

Run it from a clean checkout (it puts this checkout's src/ first on PYTHONPATH and checks that
``import mambaprune`` resolves there):

    python tests/mutation_check.py                    # every mutation, about 4 minutes on 2 CPU cores
    python tests/mutation_check.py --only scan-ref-no-decay --only train-clip-never-clips
    python tests/mutation_check.py --list             # names and the tests meant to kill each
    python tests/mutation_check.py --baseline         # the same test selections without mutations: all pass?

Exit status 1 when a mutation survived. Named without the test_ prefix, so pytest does not collect it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
TIMEOUT_S = 300


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to src/mambaprune/
    old: str  # must occur exactly once in the file
    new: str
    tests: str  # test file(s) under tests/, space separated
    k: str | None = None  # pytest -k expression


M = Mutation
MUTATIONS = [
    # ---- selective scan: the float64 reference (checked against the CPU path, which is checked against it)
    M("scan-ref-no-decay", "models/scan.py", "h = torch.exp(dt * A) * h + dt", "h = h + dt",
      "test_scan.py", "cpu_matches_reference"),
    M("scan-ref-gate-sigmoid", "models/scan.py", "y = y * F.silu(z)", "y = y * torch.sigmoid(z)",
      "test_scan.py", "cpu_matches_reference"),
    M("scan-ref-no-softplus", "models/scan.py", "delta = F.softplus(delta)", "delta = delta",
      "test_scan.py", "cpu_matches_reference"),
    # ---- the CPU fast path
    M("scan-cpu-softplus-negative-x", "models/scan_cpu.py", "lp.add_(x.clamp_min(0))", "lp.add_(x)",
      "test_scan.py", "cpu_matches_reference"),
    M("scan-cpu-bwd-no-carry-across-chunks", "models/scan_cpu.py", "torch.mul(dAk[0], dHk[0], out=carry)",
      "carry.zero_()", "test_scan.py", "cpu_matches_reference"),
    M("scan-cpu-chunk-start-no-decay", "models/scan_cpu.py", "out[0].addcmul_(dA[0], h0)", "out[0].add_(h0)",
      "test_scan.py", "cpu_matches_reference"),
    M("scan-cpu-dC-from-dh", "models/scan_cpu.py", "Hk.view(m, n, d).transpose(1, 2), out=dCt",
      "dHk.view(m, n, d).transpose(1, 2), out=dCt", "test_scan.py", "cpu_matches_reference"),
    # ---- Triton kernels, run on CPU by the interpreter
    M("scan-triton-fwd-gate-sigmoid", "models/scan_triton.py", "y = y * zv * tl.sigmoid(zv)",
      "y = y * tl.sigmoid(zv)", "test_scan.py", "triton_interpreter"),
    M("scan-triton-bwd-no-ln2", "models/scan_triton.py", "ddt = tl.sum(gdA * A2, axis=1) * LN2 + dBu * u",
      "ddt = tl.sum(gdA * A2, axis=1) + dBu * u", "test_scan.py", "triton_interpreter"),
    M("conv-triton-bwd-tap-reversed", "models/conv_triton.py", "w_ptr + offs_d * W + (W - 1 - j)",
      "w_ptr + offs_d * W + j", "test_conv.py", "triton_interpreter"),
    M("norm-triton-unbiased-variance", "models/norm_triton.py", "tl.sum(rc * rc, axis=1) / DIM + eps",
      "tl.sum(rc * rc, axis=1) / (DIM - 1) + eps", "test_norm.py", "triton_interpreter"),
    M("norm-triton-bwd-one-block-per-program", "models/norm_triton.py", "for i in range(PER_PROGRAM):",
      "for i in range(1):", "test_norm.py", "triton_interpreter"),
    # ---- candidate scan kernels (scan_triton_next.py), same interpreter
    M("scan-next-softplus-series-term", "models/scan_triton_next.py", "p = p * s2 + 0.6666666666666666  # 2/3",
      "p = p * s2 + 0.0  # 2/3", "test_scan_next.py", "interpreter"),
    M("scan-next-bwd-identity-sign", "models/scan_triton_next.py", "gdA = dh * (h - dtu[:, None] * Bv[None, :])",
      "gdA = dh * (h + dtu[:, None] * Bv[None, :])", "test_scan_next.py", "interpreter"),
    M("scan-next-sigmoid-from-e-positive-only", "models/scan_triton_next.py",
      "return tl.where(x >= 0.0, 1.0, e) / (1.0 + e)", "return 1.0 / (1.0 + e)", "test_scan_next.py", "interpreter"),
    M("scan-next-fwd-pair-second-store", "models/scan_triton_next.py", "tl.store(out_ptr + (t + 1) * s_ol, yb",
      "tl.store(out_ptr + t * s_ol, yb", "test_scan_next.py", "interpreter"),
    M("scan-next-fwd-lane-A-row-major", "models/scan_triton_next.py",
      "a_tile = offs_n[None, :] * DIM + offs_d[:, None]", "a_tile = offs_d[:, None] * NS + offs_n[None, :]",
      "test_scan_next.py", "interpreter"),
    M("scan-next-bwd-registers-group-order", "models/scan_triton_next.py", "t0 = c * K + 4 * j\n",
      "t0 = c * K + 4 * jj\n", "test_scan_next.py", "interpreter"),
    # ---- the model
    M("model-no-pos-embed", "models/mamba.py", ".transpose(1, 2) + self.pos_embed", ".transpose(1, 2)",
      "test_pruning.py", "gradients_reach_every_remaining_parameter"),
    M("model-no-input-normalisation", "models/mamba.py", "x = (x - self.norm_mean) / self.norm_std", "x = x",
      "test_models.py"),
    M("model-bidirectional-no-flip", "models/mamba.py", "y = y + backward(x.flip(1), z.flip(1)).flip(1)",
      "y = y + backward(x, z)", "test_models.py"),
    M("model-conv-anticausal", "models/mamba.py", "self.conv1d(x.transpose(1, 2))[..., :l]",
      "self.conv1d(x.transpose(1, 2))[..., -l:]", "test_conv.py", "reference_matches_the_model_conv"),
    M("model-final-norm-skipped", "models/mamba.py", "self.blocks[-1].fused_norms(resid))[0]",
      "self.blocks[-1].fused_norms(resid))[1]", "test_models.py"),
    # ---- pruning: coupling spec, slicing, plans
    M("units-forget-A_log", "pruning/units.py", 'Member(p + "A_log", 0), ', "",
      "test_pruning.py", "pruned_equals_masked"),
    M("units-kept-index-ignores-offset", "pruning/units.py", "pieces.append(lo + keep)", "pieces.append(keep)",
      "test_pruning.py", "pruned_equals_masked"),
    M("plan-compose-ignores-first", "pruning/plan.py", "[ka[j] for j in kb]", "kb",
      "test_pruning.py", "pruning_twice_composes"),
    # ---- pruning: importance and selection
    M("importance-l1-l2-swapped", "pruning/importance.py", '{"l1": l1, "l2": l2,', '{"l1": l2, "l2": l1,',
      "test_pruning.py", "l1_scores_average"),
    M("importance-taylor-no-abs", "pruning/importance.py", "_per_unit(prod, model.config, kind, torch.abs)",
      "_per_unit(prod, model.config, kind, lambda t: t)", "test_pruning.py", "taylor"),
    M("select-global-ranked-per-layer", "pruning/select.py", 'if scope == "layerwise":',
      'if scope in ("global", "layerwise"):', "test_pruning.py", "lowest_scores_are_removed"),
    M("select-min-keep-ignored", "pruning/select.py", "return max(n, floor_keep)", "return n",
      "test_pruning.py", "round_width or min_keep"),
    M("select-floor-warning-ignores-kept", "pruning/select.py", "if base * (1 - ratio) < floor and n == floor:",
      "if base * (1 - ratio) < floor:", "test_pruning.py", "floor_warnings"),
    M("core-full-blocks-not-none", "pruning/core.py", "None if len(k) == w else list(k)", "list(k)",
      "test_pruning.py", "global_and_layerwise_differ"),
    M("select-round-to-rounds-up", "pruning/select.py", "n = _round_half_up(max(n_keep, 0) / round_to)",
      "n = math.ceil(max(n_keep, 0) / round_to)", "test_pruning.py", "round_width or min_keep"),
    # ---- pruning methods: RSST, Refill, rounds
    M("rsst-update-back-to-gradient-form", "pruning/rsst.py", "        self.update = update\n",
      '        self.update = "gradient"\n', "test_rsst_default.py"),
    M("rsst-step-factor-off-by-one", "pruning/rsst.py", "return self.factors[min(max(round(progress * n), 1), n) - 1]",
      "return self.factors[min(max(round(progress * n), 1), n - 1)]", "test_methods.py", "exact_proximal"),
    M("rsst-graph-step-factor-off-by-one", "pruning/rsst.py", "t = (progress * n).round().long().clamp(1, n) - 1",
      "t = (progress * n).round().long().clamp(0, n - 1)", "test_methods.py", "cuda_graph"),
    M("rsst-shrink-not-normalised", "pruning/schedule.py", "return [math.exp(-log_f * s / total) for s in shape]",
      "return [math.exp(-log_f * s / total_steps) for s in shape]", "test_methods.py", "shrink_factors"),
    M("rsst-norm-counts-x_proj-diagonal-twice", "pruning/rsst.py",
      "for twice in double_counted(state, config, kind, i):", "for twice in []:", "test_methods.py",
      "regulariser_value"),
    M("importance-counts-x_proj-diagonal-twice", "pruning/importance.py",
      "- sum(fn(d.double()) for d in twice)", "- 0", "test_pruning.py", "l1_scores_average"),
    M("rsst-lambda-exp-not-expm1", "pruning/schedule.py", "math.expm1(p ** exponent)", "math.exp(p ** exponent)",
      "test_methods.py", "rsst_lambda"),
    M("refill-remain-ranks-by-magnitude", "pruning/refill.py", 'if criterion == "remain":',
      'if criterion == "magnitude":', "test_methods.py", "refill"),
    M("core-ratio-of-current-widths", "pruning/core.py", "base_widths=list(targets.base_widths[kind]))",
      "base_widths=None)", "test_rounds.py", "kept_units_follow_schedule"),
    M("refill-fillback-ignored-with-targets", "pruning/refill.py", "int(n + (width - n) * fillback_rate)",
      "int(n + (width - n) * fillback_rate * (targets is None))", "test_rounds.py", "fillback_brings_back"),
    # ---- checkpoints, config, training loop, counting
    M("checkpoint-not-weights-only", "checkpoint.py", "map_location=map_location, weights_only=True",
      "map_location=map_location, weights_only=False", "test_checkpoint.py", "tampered"),
    M("checkpoint-arch-unchecked", "checkpoint.py", 'if payload.get("arch") != "VisionMamba":',
      'if payload.get("arch") is None:', "test_checkpoint.py"),
    M("config-importance-choices-lose-taylor", "config.py", 'choices=("l1", "l2", "taylor", "random")',
      'choices=("l1", "l2", "random")', "test_config.py"),
    M("train-warmup-starts-at-zero", "train.py", "return base_lr * (step + 1) / warmup_steps",
      "return base_lr * step / warmup_steps", "test_train.py", "lr_"),
    M("train-clip-never-clips", "step.py", "clip_grad_norm_(self.model.parameters(), self.grad_clip)",
      'clip_grad_norm_(self.model.parameters(), float("inf"))', "test_train.py"),
    # ---- the training step as a CUDA graph (the machinery, with a stand-in capture on CPU)
    M("step-warmup-not-undone", "step.py",
      "self.capture(self._graph_body, self.device, WARMUP_STEPS, lambda: self._restore(snap))",
      "self.capture(self._graph_body, self.device, WARMUP_STEPS, None)", "test_step.py"),
    M("step-lr-not-refilled", "step.py",
      "            self._lr.fill_(lr)\n            self._progress.fill_(progress)\n            return self._replay()",
      "            self._progress.fill_(progress)\n            return self._replay()", "test_step.py"),
    M("step-partial-batch-replays-stale", "step.py",
      'x.shape == self._static["x"].shape and y.shape == self._static["y"].shape', "True", "test_step.py"),
    # ---- augmentation
    M("augment-ops-share-one-draw", "augment.py",
      "op = torch.randint(0, NUM_OPS, (b,), generator=generator, device=dev)",
      "op = torch.randint(0, NUM_OPS, (1,), generator=generator, device=dev).expand(b)", "test_augment.py"),
    M("augment-cutmix-lambda-not-area", "augment.py", "lam = 1.0 - (bottom - top) * (right - left) / (h * w)",
      "pass", "test_augment.py"),
    M("train-nan-check-skips-epoch-tail", "train.py", "if len(pending) == check_every or i + 1 == steps_per_epoch:",
      "if len(pending) == check_every:", "test_train.py", "nan_loss"),
    M("train-weight-decay-on-A_log", "train.py", "(no_decay if p.ndim < 2 or name in skip else decay)",
      "(no_decay if p.ndim < 2 else decay)", "test_train.py", "weight_decay"),
    M("cli-catches-every-error", "cli.py", "except MambaPruneError as e:", "except Exception as e:", "test_cli.py"),
    M("counting-x_proj-one-direction", "counting.py", "2 * tokens * dirs * di * (di + 2 * n)",
      "2 * tokens * di * (di + 2 * n)", "test_pruning.py", "flops"),
    # ---- state and embedding-width pruning, the one-call inference path, eager inference shortcuts
    M("units-state-forgets-C-rows", "pruning/units.py",
      'Member(p + "x_proj.weight", 0, 0, after="ssm"),\n'
      '                    Member(p + "x_proj.weight", 0, 1, after="ssm")]',
      'Member(p + "x_proj.weight", 0, 0, after="ssm")]', "test_kinds.py", "B_rows_zeroed"),
    M("plan-state-rows-before-delta", "pruning/plan.py",
      "lead = width_of(cfg, ms[0].after, i) if ms[0].after else 0", "lead = 0", "test_kinds.py", "B_rows_zeroed"),
    M("plan-state-rows-after-dense-delta", "pruning/plan.py",
      "lead = width_of(cfg, ms[0].after, i) if ms[0].after else 0",
      "lead = width_of(config, ms[0].after, i) if ms[0].after else 0", "test_kinds.py", "ssm_and_mlp_pruning"),
    M("units-embed-forgets-pos_embed", "pruning/units.py", 'Member("patch_embed.bias", 0), Member("pos_embed", 2)]',
      'Member("patch_embed.bias", 0)]', "test_kinds.py", "embed_pruned_equals"),
    M("importance-state-scores-A_log", "pruning/importance.py", 'if kind == "state":', 'if kind == "never":',
      "test_kinds.py", "state_scores"),
    M("plan-compose-embed-ignores-first", "pruning/plan.py", "out[kind] = _compose_keep(a, b)", "out[kind] = b",
      "test_kinds.py", "compose"),
    M("counting-dense-state-size", "counting.py", 'zip(c["ssm_widths"], c["mlp_widths"], _d_states(c))',
      'zip(c["ssm_widths"], c["mlp_widths"], [c["d_state"]] * c["depth"])', "test_kinds.py", "flops"),
    # ---- the state and embed kinds in the pipeline's rounds (prune.target combinations)
    M("rounds-target-ratios-only-ssm-mlp", "pruning/rounds.py", "    for kind in cfg.kinds:",
      '    for kind in ("ssm", "mlp"):', "test_rounds.py", "every_kind_follows"),
    M("rounds-removed-only-ssm-mlp", "pruning/rounds.py", "    for kind in KINDS:\n        entries = layer_entries(",
      '    for kind in ("ssm", "mlp"):\n        entries = layer_entries(', "test_rounds.py", "rsst_shrinks"),
    M("rsst-mask-state-rows-at-delta-rows", "pruning/rsst.py", "member_start(m, config, i, w) + units.to(t.device)",
      "m.offset * w + units.to(t.device)", "test_rounds.py", "rsst_shrinks"),
    M("refill-embed-one-layer-per-block", "pruning/refill.py", "for i in range(num_layers(config, kind))]",
      'for i in range(config["depth"])]', "test_rounds.py", "every_kind_follows and refill"),
    M("config-untargeted-kind-ratio-ignored", "config.py", "if getattr(p, key) is not None and kind not in kinds:",
      "if False:", "test_config.py", "bad_target"),
    M("config-own-kind-ratio-ignored", "config.py", "return self.ratio if own is None else own", "return self.ratio",
      "test_config.py", "per_kind_ratios"),
    M("checkpoint-embed-width-is-arch", "checkpoint.py", '_ARCH_KEYS = (*_DATA_KEYS, "patch_size", "depth",',
      '_ARCH_KEYS = (*_DATA_KEYS, "patch_size", "embed_dim", "depth",', "test_rounds.py", "rewind_and_reload"),
    M("checkpoint-wider-embed-accepted", "checkpoint.py", "return width > ref_width", "return False",
      "test_rounds.py", "rewind_and_reload"),
    M("model-A-cache-ignores-edits", "models/mamba.py", "key = (A_log._version, A_log.data_ptr(),",
      "key = (A_log.data_ptr(),", "test_models.py", "cached"),
    M("scan-triton-never-saves-checkpoints", "models/scan_triton.py", "SAVE_CK=save_ck", "SAVE_CK=False",
      "test_scan.py", "triton_interpreter"),
    M("scan-triton-compiled-inference-saves-checkpoints", "models/scan_triton.py",
      "return _infer_op(*args) if torch.compiler.is_compiling()",
      "return _fwd_op(*args)[0] if torch.compiler.is_compiling()", "test_scan.py", "triton_interpreter"),
    M("norm-triton-direct-drops-the-add", "models/norm_triton.py",
      "(rout.view(resid.shape) if branch is not None else resid)", "resid", "test_scan.py", "triton_interpreter"),
    M("inference-hands-out-the-static-output", "inference.py", "[:chunk.shape[0]].clone())", "[:chunk.shape[0]])",
      "test_speed.py", "static_batch_runner"),
    # ---- comparing runs: headline, MLflow parents, timing, data source check
    M("size-report-flop-reduction-from-params", "counting.py", '"flop_reduction": 1.0 - out["flops"] / dense_flops}',
      '"flop_reduction": 1.0 - out["params"] / dense_params}', "test_pruning.py test_kinds.py",
      "reference_hybrid_pruning_count or every_kind_together"),
    M("headline-throughput-of-the-dense-model", "headline.py", '("speedup", "speedup_spread", "img_per_s", "device")',
      '("speedup", "speedup_spread", "dense_img_per_s", "device")', "test_headline.py"),
    M("tracking-exp-runs-reuse-a-parent-by-state", "tracking.py", 'if state and key.startswith("repro:"):',
      "if state:", "test_tracking.py", "changed_nothing"),
    M("tracking-changes-reversed", "tracking.py", 'f"{key} {_yaml_value(old[key])}→{_yaml_value(new[key])}"',
      'f"{key} {_yaml_value(new[key])}→{_yaml_value(old[key])}"', "test_tracking.py", "describe_changes"),
    M("speedup-ratio-of-medians", "speed.py", "mid = statistics.median(ratios)",
      "mid = statistics.median(rates[model]) / statistics.median(rates[baseline])", "test_speed.py", "spread"),
    M("speed-report-publishes-a-disturbed-speedup", "speed.py", 'figures["speedup"] = None',
      'figures["speedup"] = figures["speedup"]', "test_speed.py", "speed_report"),
    M("speed-headline-of-the-eager-mode", "speed.py", "head = by_mode[HEADLINE_SPEED_MODE]",
      'head = by_mode["eager"]', "test_speed.py", "speed_report"),
    M("speed-mode-figures-of-the-dense-model", "speed.py", '"img_per_s": p["img_per_s"], "speedup": speedup,',
      '"img_per_s": d["img_per_s"], "speedup": speedup,', "test_speed.py", "three_mode"),
    M("speed-one-call-fallback-timed-twice", "speed.py",
      'if mode == "one_call" and ran[mode, name][0] == "eager" and "eager" in modes:', "if False:",
      "test_speed.py", "fallen_back"),
    M("config-speed-modes-without-one-call", "config.py", "if HEADLINE_SPEED_MODE not in e.speed_modes:", "if False:",
      "test_config.py", "bad_values"),
    M("cut-cost-not-rounded", "pruning/checks.py",
      'round(metrics["val_acc_before_cut"] - metrics["val_acc_after_cut"], RECORD_DECIMALS)',
      'metrics["val_acc_before_cut"] - metrics["val_acc_after_cut"]', "test_cut_checks.py"),
    M("costly-cut-at-one-point", "pruning/checks.py", "if lost > limit:", "if lost >= limit:", "test_cut_checks.py"),
    M("cut-report-counts-every-round", "pruning/checks.py", '"costly_cuts": len(warnings)',
      '"costly_cuts": len(rounds)', "test_cut_checks.py"),
    M("headline-costly-cuts-never-counted", "headline.py", '"costly_cuts": evaluate.get("costly_cuts"),',
      '"costly_cuts": 0,', "test_headline.py"),
    M("timing-too-fast-not-flagged", "timing_history.py", "if ref / tolerance <= rate <= ref * tolerance:",
      "if ref / tolerance <= rate:", "test_speed.py", "history"),
    M("threads-not-shared", "train.py", "torch.set_num_threads(max(1, cores // workers))",
      "torch.set_num_threads(cores)", "test_speed.py", "share_the_cores"),
    M("check-source-skips-cifar", "data.py", "if not (root / cls.base_folder).is_dir():",
      "if False:", "test_data.py", "check_source"),
]


def pytest_args(m: Mutation) -> list[str]:
    args = [f"tests/{t}" for t in m.tests.split()]
    return args + (["-k", m.k] if m.k else [])


def check_snippets(mutations: list[Mutation]) -> None:
    """Stop before touching anything if a snippet is missing or ambiguous (the source moved on)."""
    for m in mutations:
        count = (SRC / "mambaprune" / m.file).read_text(encoding="utf-8").count(m.old)
        if count != 1:
            sys.exit(f"error: mutation {m.name}: `old` occurs {count} times in src/mambaprune/{m.file} "
                     f"(it must occur exactly once): {m.old!r}")


def pytest_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1", "MAMBAPRUNE_NO_PROGRESS": "1"}


def check_import_location() -> None:
    """A mutant in this checkout proves nothing if the tests import mambaprune from somewhere else."""
    where = subprocess.run([sys.executable, "-c", "import mambaprune; print(mambaprune.__file__)"], env=pytest_env(),
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    if not where.startswith(str(SRC) + os.sep):
        sys.exit(f"error: `import mambaprune` resolves to {where or 'nothing'}, not {SRC}")


def run_pytest(args: list[str], timeout: float) -> tuple[int | None, str]:
    """(pytest's exit code or None on timeout, its output). Its own process group, so a timeout or Ctrl-C
    also ends the subprocesses some tests start (the Triton interpreter runs)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=pytest_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        return None, ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def first_failure(output: str) -> str:
    match = re.search(r"^(FAILED|ERROR) (\S+)", output, re.M)
    return match.group(2) if match else ""


def run_mutation(m: Mutation) -> tuple[str, str]:
    """Apply ``m``, run its tests, restore the file (bytes and mtime) whatever happens → (verdict, detail)."""
    path = SRC / "mambaprune" / m.file
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(original.decode("utf-8").replace(m.old, m.new, 1).encode("utf-8"))
        code, out = run_pytest(pytest_args(m), TIMEOUT_S)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    if code is None:
        return "TIMEOUT", ""
    if code == 0:
        return "SURVIVED", ""
    if code in (1, 2):  # tests failed, or collection/import failed because of the mutant
        return "KILLED", first_failure(out)
    sys.exit(f"error: mutation {m.name}: pytest exit code {code} (5 = the selection matched no tests)\n"
             f"{out[-2000:]}")


def _sigterm(signum, frame):
    raise KeyboardInterrupt  # so the `finally` blocks restore the source file and end pytest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests")
    parser.add_argument("--baseline", action="store_true", help="run the test selections without mutations")
    opts = parser.parse_args()
    names = {m.name for m in MUTATIONS}
    assert len(names) == len(MUTATIONS), "mutation names must be unique"
    unknown = set(opts.only or ()) - names
    if unknown:
        sys.exit(f"error: unknown mutation(s) {sorted(unknown)}; see --list")
    chosen = [m for m in MUTATIONS if not opts.only or m.name in opts.only]
    if opts.list:
        for m in chosen:
            print(f"{m.name:40s} {shlex.join(pytest_args(m))}")
        return 0
    check_snippets(chosen)
    check_import_location()
    signal.signal(signal.SIGTERM, _sigterm)

    if opts.baseline:  # every distinct selection must pass on the unmutated code, or a KILLED means nothing
        failed = 0
        for args in dict.fromkeys(tuple(pytest_args(m)) for m in chosen):
            start = time.monotonic()
            code, out = run_pytest(list(args), TIMEOUT_S)
            verdict = "PASS" if code == 0 else f"FAIL ({code}) {first_failure(out)}"
            failed += code != 0
            print(f"{verdict:10s} {time.monotonic() - start:6.1f} s  {shlex.join(args)}", flush=True)
        return 1 if failed else 0

    results: dict[str, list[str]] = {"KILLED": [], "SURVIVED": [], "TIMEOUT": []}
    start_all = time.monotonic()
    for m in chosen:
        start = time.monotonic()
        verdict, detail = run_mutation(m)
        results[verdict].append(m.name)
        print(f"{verdict:8s} {time.monotonic() - start:6.1f} s  {m.name:40s} {detail}", flush=True)
    minutes = (time.monotonic() - start_all) / 60
    print(f"\n{len(chosen)} mutations in {minutes:.1f} min: " + ", ".join(f"{len(v)} {k.lower()}"
                                                                     for k, v in results.items()))
    for name in results["SURVIVED"]:
        print(f"  survived: {name}")
    for name in results["TIMEOUT"]:
        print(f"  timed out: {name}")
    return 1 if results["SURVIVED"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted (the mutated file was restored)")
