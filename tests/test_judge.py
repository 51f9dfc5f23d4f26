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
