"""Part A: sampling and editing with DeepFloyd IF's stage 1 (write-up sections 0 to 1.9).

``denoise``  1.1 the forward process, 1.2 Gaussian blur, 1.3 one-step and 1.4 iterative denoising,
             1.5 sampling, 1.6 classifier-free guidance, 1.7 SDEdit and inpainting
``views``    1.8 visual anagrams, 1.9 hybrid images; more views (quarter turns, jigsaw, permutations) and
             the orthogonality a view needs (A1.9a)
``decompositions``  factorized diffusion: low/high (1.9), three bands, grayscale + colour, motion blur,
             a part held to a given image (A1.9b)
``schedule`` the DDPM schedule read from IF's scheduler: abar_t, 1.1 q(x_t | x_0), the strided list,
             x0_hat and its thresholding, a strided step's posterior mean and learned variance
``checks``   the argument checks ``denoise`` and ``views`` share (run once, at the public function)
``models``   the stage-1 bundle (DeepFloyd, the pack's ``mini``, a tiny test model)
``prompts``  prompt embeddings (the shipped file, or T5 through diffusers)
``images``   reading images and masks, and showing model images
``explorers`` the Part A notebooks' explorers (sliders over steps, guidance, views, the jigsaw, motion blur)
"""
