"""How fast an explorer answers a moved control, against computing the setting on demand.

    python benchmarks/bench_explorers.py            # Part A's explorers on mini, CPU

For each Part A explorer (on the quick profile's ``mini``): the time to build it (every setting rendered
once, when the notebook cell runs), and the time from a slider's new value to the widget holding the new
picture, first visit (PNG encoded then) and repeat visit (cached), against the baseline a plain
``ipywidgets.interact`` over the same function would pay: rendering the setting afresh and drawing it
with matplotlib.  Also the time of one CFG sample batch at 1 thread and at torch's default thread count,
the measurement behind ``diffnb.core.devices.choose_threads``.  Run it alone: a second job on two cores
makes every number several times slower.
"""
from __future__ import annotations

import io
import os
import statistics
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("DIFFNB_PROGRESS", "off")


def _ms(f, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    from diffnb import part_a
    from diffnb.a import denoise as ddpm
    from diffnb.a import explorers as ex
    from diffnb.core.plotting import show_grid

    default_threads = torch.get_num_threads()
    pa = part_a.setup_part_a("quick")                       # sets 1 thread (choose_threads)
    x0 = pa.image(pa.settings["images"]["image"])
    prompt = pa.embed(pa.settings["prompts"]["picture"])
    ts = pa.timesteps()
    noisy = ddpm.forward(x0, ts[10], pa.stage1, pa.generator())
    cases = {
        "A1.1 forward (t)": lambda: ex.explore_forward(pa, x0, range(0, 1000, 50)),
        "A1.4 trajectory (step)": lambda: ex.explore_trajectory(pa, noisy, 10, prompt, ts),
        "A1.6 guidance (gamma)": lambda: ex.explore_guidance(pa, prompt, [0, 1, 3, 7, 12], num_images=3),
        "A1.7 SDEdit (i_start)": lambda: ex.explore_sdedit(pa, x0, prompt, [1, 3, 5, 7, 10, 20]),
        "A1.7.2 inpaint (region)": lambda: ex.explore_inpaint(pa, x0, prompt),
        "A1.8 turn (angle)": lambda: ex.explore_turn(torch.cat([x0] * 4)),
        "A1.9 distance (factor)": lambda: ex.explore_distance(torch.cat([x0] * 4)),
    }
    print(f"{'explorer':26s} {'settings':>8s} {'build s':>8s} {'move, 1st ms':>13s} {'move, again ms':>15s} "
          f"{'recompute ms':>13s} {'ratio':>7s}")
    for name, build in cases.items():
        t0 = time.perf_counter()
        e = build()
        built = time.perf_counter() - t0
        e.widget()
        (control, slider), = list(e.sliders.items())[:1]
        values = [v for _, v in slider.options]
        first = []
        for v in values[1:]:                                    # first visit: PNG encoded now
            t1 = time.perf_counter()
            slider.value = v
            first.append(time.perf_counter() - t1)
        again = _ms(lambda: [setattr(slider, "value", v) for v in values]) / len(values)

        setting = dict(e.static[-1])

        def recompute():                                        # what interact() over the render would pay
            fig = show_grid(e.frame(**setting).images, nrow=1)
            fig.savefig(io.BytesIO(), format="png")
            plt.close(fig)
        render_s = built / len(e.frames)                        # the mean cost of rendering one setting
        baseline = 1000 * render_s + _ms(recompute, 3)
        move_first = 1000 * statistics.median(first)
        print(f"{name:26s} {len(e.frames):8d} {built:8.2f} {move_first:13.1f} {again:15.2f} {baseline:13.1f} "
              f"{baseline / move_first:6.0f}x")

    x = ddpm.pure_noise(pa.stage1, pa.generator(), num_images=5)
    for n in sorted({1, default_threads}):
        torch.set_num_threads(n)
        s = _ms(lambda: ddpm.sample_cfg(pa.stage1, prompt, pa.uncond, ts, pa.scale, pa.generator(), num_images=5), 3)
        print(f"5-image CFG sample ({len(ts) - 1} steps) at {n} thread(s): {s / 1000:.2f} s")
    del x


if __name__ == "__main__":
    main()
