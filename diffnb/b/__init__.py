"""Part B: a UNet trained on digits, then flow matching (write-up sections 1.1 to 2.6).

``unet``      1.1 the UNet blocks, 2.1 and 2.4 their time- and class-conditioned versions
``denoiser``  1.2 noising, the denoiser's loss and the pure-noise loss
``flow``      2.1 to 2.6 the flow-matching losses and the Euler samplers, with CFG
``solvers``   sampling in fewer steps: Euler, midpoint, Heun, RK4 and dopri5 (torchdiffeq), an SDE sampler,
              time grids; network evaluations counted (``diffnb.core.counting``)
``toy2d``     the 2D lab (B2.1a): toy data, a small MLP flow, the sliced Wasserstein distance
``train``     the five training runs, checkpointed and resumable
``digits``    the digits: MNIST through torchvision, or digits rendered offline
``glyphs``    how diffnb draws its own digits (fonts and strokes, thickened, warped, framed like MNIST)
``judge``     a small digit classifier that reads samples; the reading type of both judges
"""
