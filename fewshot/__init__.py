"""fewshot: meta-learning for few-shot image classification.

Public API only; importing this package does no work and never imports Streamlit or plotting code.
"""

from .backbones import Conv4, conv4, feature_dim
from .checkpoints import CheckpointError, CheckpointInfo, load_checkpoint, read_checkpoint_info, save_checkpoint
from .config import TaskConfig, TrainConfig
from .datasets import FewShotDataset, FolderDataset, SyntheticDataset, TensorDataset
from .embedding import extract_features, pca_2d, tsne_2d
from .live import LiveConfig, LiveResult, LiveRun, LiveSnapshot, RunLimitError
from .methods import (MAML, MANN, METHOD_TITLES, METHODS, AdaptStep, FewShotClassifier, FineTuneBaseline,
                      MatchingNetwork, PrototypicalNetwork, SiameseNetwork, adapt, adapt_steps, build_model,
                      compute_prototypes)
from .omniglot import PROTOCOLS, DataNotFoundError, load_omniglot, resolve_data_dir
from .taskfile import SharedTask, TaskFileError, TaskImage, read_task, write_task
from .augment import AffineAugment
from .tasks import AlphabetTaskSampler, MixedShotSampler, Task, TaskSampler, make_task
from .training import (EvalResult, NonFiniteLossError, StepLog, TrainResult, TrainState, evaluate, resolve_device, train,
                       use_fast_layout)
from .transforms import ImageError, preprocess_image, preprocess_photo

__version__ = "0.1.0"

__all__ = [
    "Conv4", "conv4", "feature_dim",
    "CheckpointError", "CheckpointInfo", "load_checkpoint", "read_checkpoint_info", "save_checkpoint",
    "TaskConfig", "TrainConfig",
    "FewShotDataset", "FolderDataset", "SyntheticDataset", "TensorDataset",
    "extract_features", "pca_2d", "tsne_2d",
    "LiveConfig", "LiveResult", "LiveRun", "LiveSnapshot", "RunLimitError",
    "MAML", "MANN", "METHOD_TITLES", "METHODS", "AdaptStep", "FewShotClassifier", "FineTuneBaseline",
    "MatchingNetwork", "PrototypicalNetwork", "SiameseNetwork", "adapt", "adapt_steps", "build_model",
    "compute_prototypes",
    "PROTOCOLS", "DataNotFoundError", "load_omniglot", "resolve_data_dir",
    "SharedTask", "TaskFileError", "TaskImage", "read_task", "write_task",
    "AffineAugment", "AlphabetTaskSampler", "MixedShotSampler", "Task", "TaskSampler", "make_task",
    "EvalResult", "NonFiniteLossError", "StepLog", "TrainResult", "TrainState", "evaluate", "resolve_device", "train",
    "use_fast_layout",
    "ImageError", "preprocess_image", "preprocess_photo",
]
