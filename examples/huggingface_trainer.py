"""A Hugging Face Trainer, watched and steered with tui-trainer.

    pip install 'tui-trainer[hf]'                  # transformers and accelerate
    python examples/huggingface_trainer.py         # a tiny GPT-2 from scratch, seconds on a CPU
    tui-trainer attach outputs/hf-run-...          # from another terminal: p, e, c, x x
    tui-trainer run -- python examples/huggingface_trainer.py --steps 5000   # both in one terminal

Nothing is downloaded: the model is a randomly initialised one-layer GPT-2
and the data is this file's bytes.  The one tui-trainer line is the callback.
"""
import argparse
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from tui_trainer.loops.huggingface import TuiTrainerCallback

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--steps", type=int, default=300)
p.add_argument("--out", help="the run folder (default: a new outputs/hf-run-...)")
args = p.parse_args()

torch.manual_seed(0)
torch.set_num_threads(1)  # a model this small only loses time to more threads
context = 32
data = list(open(__file__, "rb").read())
blocks = [{"input_ids": torch.tensor(data[i:i + context]), "labels": torch.tensor(data[i:i + context])}
          for i in range(0, len(data) - context, context // 2)]
split = int(0.9 * len(blocks))
# Bytes are the tokens (vocab 256), so the special tokens are a byte too: NUL, which text never holds
# (GPT2Config's default, 50256, is outside this vocabulary and transformers warns about it).
model = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_positions=context, n_embd=64, n_layer=1, n_head=2,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0))
out = args.out or time.strftime("outputs/hf-run-%Y%m%d-%H%M%S")

trainer = Trainer(
    model=model,
    args=TrainingArguments(
        output_dir=f"{out}/hf", max_steps=args.steps, per_device_train_batch_size=8, learning_rate=1e-3,
        logging_steps=5, eval_strategy="steps", eval_steps=100, save_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True),
    train_dataset=blocks[:split],
    eval_dataset=blocks[split:],
    callbacks=[TuiTrainerCallback(out)],  # the run: log, control socket, Ctrl-C; ends with training
)
trainer.train()
