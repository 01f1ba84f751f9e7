"""Conv-4: output widths, parameter count, BatchNorm options."""

from __future__ import annotations

import pytest
import torch

from fewshot import Conv4, conv4, feature_dim


def test_feature_dim_omniglot_and_miniimagenet_shapes():
    assert feature_dim(conv4(1, 64), (1, 28, 28)) == 64
    assert feature_dim(conv4(3, 64), (3, 84, 84)) == 1600  # 64 * 5 * 5


def test_forward_output_shape_matches_feature_dim():
    net = conv4(1, 32)
    out = net(torch.rand(7, 1, 28, 28))
    assert out.shape == (7, 32)
    assert isinstance(net, Conv4)


def test_parameter_count_of_conv4_1_64():
    # block 1: conv 1->64 (64*1*9 + 64) + BN (64 + 64); blocks 2-4: conv 64->64 (64*64*9 + 64) + BN (128)
    expected = (64 * 9 + 64 + 128) + 3 * (64 * 64 * 9 + 64 + 128)
    assert expected == 111_936
    assert sum(p.numel() for p in conv4(1, 64).parameters()) == expected


def test_four_blocks_of_conv_bn_relu_pool():
    net = conv4(1, 8)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 4 and len(norms) == 4
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    # ReLU then max-pool: features are non-negative
    assert bool((net(torch.randn(4, 1, 16, 16)) >= 0).all())


@pytest.mark.parametrize("track", [True, False])
def test_track_running_stats_option(track):
    net = conv4(1, 4, track_running_stats=track)
    names = {name for name, _ in net.named_buffers()}
    assert any("running_mean" in n for n in names) == track
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()(torch.rand(4, 1, 16, 16))
    changed = any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert changed == track  # without running stats a train-mode call leaves no trace


def test_feature_dim_restores_training_mode():
    net = conv4(1, 4).train()
    feature_dim(net, (1, 16, 16))
    assert net.training
