"""Your own PyTorch loop, watched and steered with tui-trainer.

    python examples/own_loop.py                    # trains a tiny model in a few seconds on a CPU
    tui-trainer attach outputs/run-...             # from another terminal while it runs: p, e, c, x x
    tui-trainer run -- python examples/own_loop.py --steps 30000    # both in one terminal

The model is a byte-level bigram (an embedding and a linear layer) trained on
this very file; what matters is the five tui_trainer calls marked below.
"""
import argparse

import torch
import torch.nn.functional as F

import tui_trainer

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--steps", type=int, default=3000)
p.add_argument("--out", help="the run folder (default: a new outputs/run-...)")
args = p.parse_args()

torch.manual_seed(0)
torch.set_num_threads(1)  # a model this small only loses time to more threads
data = torch.tensor(list(open(__file__, "rb").read()), dtype=torch.long)
split = int(0.9 * len(data))
train_data, val_data = data[:split], data[split:]
model = torch.nn.Sequential(torch.nn.Embedding(256, 64), torch.nn.Linear(64, 256))
config = {"lr": 3e-3, "batch_size": 256, "steps": args.steps, "eval_every": 500}
opt = torch.optim.AdamW(model.parameters(), lr=config["lr"])


def loss_on(data):
    i = torch.randint(len(data) - 1, (config["batch_size"],))
    return F.cross_entropy(model(data[i]), data[i + 1])


@torch.no_grad()
def evaluate(step):  # also what attach's "eval now" calls
    return {"val_loss": sum(loss_on(val_data).item() for _ in range(10)) / 10}


@torch.no_grad()
def sample(prompt, tokens=None, **_):  # attach --sample "def "
    out = list(prompt.encode())
    for _ in range(tokens or 80):
        probs = F.softmax(model(torch.tensor(out[-1:])), dim=-1)
        out.append(int(torch.multinomial(probs[0], 1)))
    return bytes(out).decode(errors="replace")


def save(step):  # also what attach's "checkpoint now" calls
    run.save_checkpoint(step, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step})


def set_lr(lr):  # attach --set lr=1e-3
    for group in opt.param_groups:
        group["lr"] = lr


# 1. the run: folder, log, control socket, Ctrl-C handling
with tui_trainer.init(args.out, config=config, on_eval=evaluate, on_checkpoint=save, on_sample=sample,
                      total_steps=args.steps, model=model) as run:
    run.on_setting("lr", set_lr)  # 2. a live setting, applied inside run.log
    step = 0
    for step in range(1, args.steps + 1):
        loss = loss_on(train_data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.log(step, train_loss=loss.item(), lr=run.config["lr"])  # 3. one record; a pause waits here
        if step % config["eval_every"] == 0:
            run.log_eval(step, **evaluate(step))
            run.log_sample(step, sample("def "), prompt="def ")
            save(step)
        if run.should_stop:  # 4. attach's stop, Ctrl-C, SIGTERM
            break
    if run.checkpoints.last_step != step:
        save(step)
# 5. leaving the with block wrote the run_end (failed, with the error, on an exception)
print(f"{run.folder}: {run.finish().status} at step {step}")
