"""Part B: a UNet trained on digits, then flow matching (write-up sections 1.1 to 2.6).

``unet``     1.1 the UNet blocks, 2.1 and 2.4 their time- and class-conditioned versions
``flow``     1.2 the denoiser's losses, 2.1 to 2.6 the flow-matching losses and Euler samplers
``train``    the five training runs, checkpointed and resumable
``digits``   the digits: MNIST through torchvision, or digits rendered offline from fonts and strokes
``judge``    a small digit classifier that reads samples
"""
