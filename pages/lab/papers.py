"""Published figures the pages compare the models with."""

from __future__ import annotations

from typing import Any

HUMAN_ERROR_LAKE = 0.045  # Lake, Salakhutdinov & Tenenbaum 2015, Science: people on 20-way one-shot Omniglot

# Published Omniglot accuracies (%) for (n_way, n_shot), all on the Vinyals et al. 2016 split (with rotations).
PAPER_RESULTS: dict[str, dict[str, Any]] = {
    "protonet": {"source": "Snell et al. 2017, Table 1",
                 "acc": {(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0, (20, 5): 98.9}},
    "matching": {"source": "Vinyals et al. 2016, Table 1",
                 "acc": {(5, 1): 98.1, (5, 5): 98.9, (20, 1): 93.8, (20, 5): 98.5}},
    "siamese": {"source": "Koch et al. 2015, as re-run by Vinyals et al. 2016, Table 1 (with fine-tuning)",
                "acc": {(5, 1): 97.3, (5, 5): 98.4, (20, 1): 88.1, (20, 5): 97.0}},
    "maml": {"source": "Finn et al. 2017, Table 1",
             "acc": {(5, 1): 98.7, (5, 5): 99.9, (20, 1): 95.8, (20, 5): 98.9}},
    "fomaml": {"source": "Finn et al. 2017, Table 1 (first-order approximation)",
               "acc": {(5, 1): 98.3, (5, 5): 99.2, (20, 1): 89.4, (20, 5): 97.9}},
    "mann": {"source": "Santoro et al. 2016 (accuracy at the 2nd / 5th showing), as listed by Vinyals et al. 2016",
             "acc": {(5, 1): 82.8, (5, 5): 94.9}},
    "finetune": {"source": "Vinyals et al. 2016, Table 1 ('Baseline classifier', a related transfer baseline)",
                 "acc": {(5, 1): 80.0, (5, 5): 95.0, (20, 1): 69.5, (20, 5): 89.1}},
}
