"""The Gowalla benchmark's parameter averages: the arithmetic of the moving average, and that ranking with
an average leaves the trained parameters as they were."""
import torch

from bench.lightgcn_gowalla import Averages


def test_moving_average_follows_each_step_and_swapping_restores_the_trained_parameters():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    averages = Averages(model, [0.5])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = model.weight.detach().clone()
    try:
        for step in range(1, 6):
            opt.zero_grad()
            model(torch.ones(1, 3)).sum().backward()
            opt.step()
            decay = min(0.5, (1 + step) / (10 + step))  # the warm-up keeps early averages short
            expected = decay * expected + (1 - decay) * model.weight.detach()
        assert averages.steps == 5
        assert torch.allclose(averages.shadow[0.5][0], expected)
        trained = model.weight.detach().clone()
        with averages.swapped(0.5):
            assert torch.allclose(model.weight, expected)
        assert torch.equal(model.weight, trained)
    finally:
        averages.handle.remove()  # the hook is global to all optimizers
