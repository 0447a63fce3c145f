"""What a fit feeds the model and how long the model takes: every training batch's tokens (fed, real, labelled,
causal pairs: nexa_core/models/speed.py), the time of each optimizer step (forward, backward and the optimizer,
between the trainer's on_step_begin and on_step_end; batches are collated before on_step_begin, logging, evaluation
and saves come after on_step_end), the time of its evaluations and trainer saves, and a progress line every
`progress_seconds`. Its record gives the stage's tokens/s, model FLOP/s, MFU against this machine's GEMM rate at
the model's shape, padding share and the time spent outside the model."""

from __future__ import annotations

import time

from nexa_core.models.speed import ModelShape, add_tokens, batch_tokens, gemm_roof, speed_figures
from nexa_core.progress import Progress


class FitMeter:
    def __init__(self, stage: str, domain: str, every: float, log, completion_head: bool):
        """`completion_head`: the trainer computes the LM head only at labelled positions (CompletionSFTTrainer)."""
        self.stage, self.domain, self.every, self.log = stage, domain, every, log
        self.completion_head = completion_head
        self.tokens: dict = {}
        self.batches = 0
        self.model_seconds = 0.0
        self.eval_seconds = 0.0  # evaluations on the validation split, between steps
        self.save_seconds = 0.0  # trainer checkpoints (weights and optimizer state), between steps
        self.reported = 0  # real tokens already handed to the progress line
        self.progress: Progress | None = None

    def count(self, inputs: dict) -> None:
        fields = ("input_ids", "attention_mask", "position_ids", "labels")
        self.tokens = add_tokens(self.tokens, batch_tokens(**{k: inputs.get(k) for k in fields}))
        self.batches += 1

    def counting(self, trainer_class):
        """`trainer_class` that counts the tokens of each training batch it steps on (evaluation batches are not)."""
        meter = self

        class Metered(trainer_class):
            def training_step(self, model, inputs, *args, **kwargs):
                meter.count(inputs)
                return super().training_step(model, inputs, *args, **kwargs)

        Metered.__name__ = Metered.__qualname__ = trainer_class.__name__
        return Metered

    def callback(self):
        """A TrainerCallback that times each optimizer step and reports progress."""
        import torch
        from transformers import TrainerCallback

        meter = self
        cuda = torch.cuda.is_available()

        def now() -> float:
            if cuda:  # the step's kernels finish before it is timed
                torch.cuda.synchronize()
            return time.perf_counter()

        class Meter(TrainerCallback):
            began = mark = 0.0  # the step's start; the end of what came last after it (step, log, evaluation)

            def on_train_begin(self, args, state, control, **kwargs):
                meter.progress = Progress(
                    meter.stage, meter.domain, state.max_steps, meter.log, meter.every, done=state.global_step
                )

            def on_step_begin(self, args, state, control, **kwargs):
                self.began = now()

            def on_step_end(self, args, state, control, **kwargs):
                self.mark = now()
                meter.model_seconds += self.mark - self.began
                real = meter.tokens.get("real", 0)
                if meter.progress:
                    meter.progress.update(state.global_step, real - meter.reported)
                meter.reported = real

            # after on_step_end the trainer logs, evaluates and saves, in that order, each followed by its event
            def on_log(self, args, state, control, **kwargs):
                self.mark = now()

            def on_evaluate(self, args, state, control, **kwargs):
                meter.eval_seconds += now() - self.mark
                self.mark = now()

            def on_save(self, args, state, control, **kwargs):
                meter.save_seconds += now() - self.mark
                self.mark = now()

        return Meter()

    def record(self, model, wall: float, bf16: bool, world_size: int = 1) -> dict:
        """Speed figures of the fit for its record: tokens counted on this process, times `world_size` (each rank
        trains as many), over `wall` seconds; nothing but the times when no step ran here (already trained)."""
        times = {
            "model_seconds": self.model_seconds,
            "outside_seconds": max(wall - self.model_seconds, 0.0),
            "eval_seconds": self.eval_seconds,
            "save_seconds": self.save_seconds,
        }
        t = self.tokens
        if not t.get("real"):
            return times
        shape = ModelShape.of(model)
        head = t["labelled"] if self.completion_head else t["real"]
        flops = shape.training_flops(t["real"], t["pairs"], head)
        roof = gemm_roof(round(t["fed"] / self.batches), shape.hidden, shape.intermediate, bf16)
        figures = speed_figures(flops, t["real"], wall, roof)  # per rank: MFU is the same over all of them
        return {
            **times,
            **figures,
            "tokens_per_second": figures["tokens_per_second"] * world_size,
            "model_tflops": figures["model_tflops"] * world_size,
            "fed_tokens": t["fed"] * world_size,
            "real_tokens": t["real"] * world_size,
            "padding_share": 1 - t["real"] / t["fed"],
            "head_positions": "labelled" if self.completion_head else "all",
            "model_flops": flops * world_size,
        }
