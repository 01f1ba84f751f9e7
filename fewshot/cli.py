"""``fewshot`` / ``python -m fewshot``: train, evaluate, predict, info, download.

User errors (bad paths, impossible task shapes, broken files) print one ``error:`` line and exit
with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from .augment import AffineAugment
from .checkpoints import CheckpointError, command_line, load_checkpoint, save_checkpoint, training_summary
from .cli_args import check_arguments, check_out_path, dumps_json, one_line, skipped_summary
from .config import TaskConfig, TrainConfig
from .datasets import FolderDataset, TensorDataset, list_image_files
from .distributed import World, init_from_env, shutdown
from .methods import FewShotClassifier, build_model
from .methods.maml import MAML
from .omniglot import DataNotFoundError, download_omniglot, load_omniglot
from .sine_cli import cmd_train_sine, reject_regressor
from .soup import INPUT_KEYS, average_state_dicts, check_soupable
from .pretrain import VAL_WAY, pretrain_encoder, steps_for_epochs
from .taskfile import read_task, support_dataset
from .tasks import AlphabetTaskSampler, MixedShotSampler, TaskSampler
from .training import EvalResult, NonFiniteLossError, StepLog, TrainState, evaluate, resolve_device, train, use_fast_layout
from .transforms import ImageError, preprocess_image

from .cli_parser import build_parser
from .encoders import copy_backbone

__all__ = ["main", "build_parser"]


class UserError(Exception):
    """Reported as one line on stderr, exit status 2."""


def _load_dataset(args: argparse.Namespace, split: str, *, image_size: int, rotations: bool | None,
                  center: bool = True) -> TensorDataset:
    if args.dataset == "folder":
        if not args.data_dir:
            raise UserError("--dataset folder needs --data-dir pointing at a folder of class subfolders")
        return FolderDataset(args.data_dir, image_size, center=center)
    return load_omniglot(args.protocol, split, data_dir=args.data_dir, image_size=image_size, rotations=rotations)


def _method_kwargs(args: argparse.Namespace, train_set: TensorDataset) -> dict[str, Any]:
    kw: dict[str, Any] = {"hidden": args.hidden}
    m = args.method
    if m in ("maml", "fomaml"):
        kw["n_way"] = args.n_way
        for name in ("inner_steps", "inner_lr", "inner_steps_test", "inner_lr_test", "batch_norm", "multi_step_loss",
                     "inner_grad_clip", "inner_augment", "inner_params"):
            if getattr(args, name) is not None:
                kw[name] = getattr(args, name)
        if args.inner_temperature is not None:
            kw["inner_temperature"] = args.inner_temperature
        for flag in ("proto_head", "learn_inner_lr", "learn_inner_temperature"):
            if getattr(args, flag):
                kw[flag] = True
        if args.checkpoint_inner:
            kw["checkpoint_inner"] = True
    elif m == "mann":
        kw["n_way"] = args.n_way
    elif m == "protonet" and args.distance:
        kw["distance"] = args.distance
    elif m == "matching":
        kw["fce"] = args.fce
        kw["scale_init"] = args.cosine_scale if args.cosine_scale > 0 else None
    elif m == "siamese" and args.aggregate:
        kw["aggregate"] = args.aggregate
    elif m == "finetune":
        kw["n_classes"] = len(train_set.class_names)
        kw["finetune_backbone"] = args.finetune_backbone
        if args.finetune_steps is not None:
            kw["finetune_steps"] = args.finetune_steps
    kw["feature_dim"] = args.hidden * (args.image_size // 16) ** 2
    if m == "protonet":
        kw.pop("feature_dim")
    return kw


def _check_shape(model: FewShotClassifier, n_way: int, what: str) -> None:
    fixed = getattr(model, "n_way", None)
    if fixed is not None and n_way > fixed:
        raise UserError(f"this {what} model has a {fixed}-way output head and cannot answer {n_way}-way tasks; "
                        f"use --n-way {fixed} or less, or train a {n_way}-way model")


def _progress(args: argparse.Namespace, total: int, initial: int):
    if args.quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    world = init_from_env(args.device)  # None unless started by torchrun as one of several processes
    try:
        return _train(args, world)
    finally:
        shutdown(world)


def _train(args: argparse.Namespace, world: World | None) -> int:
    if args.freeze_backbone and args.method in ("maml", "fomaml") and not (
            args.proto_head and (args.learn_inner_lr or args.learn_inner_temperature)):
        raise UserError("--freeze-backbone with MAML keeps the initialisation fixed and learns only how to adapt: it "
                        "needs --proto-head and --learn-inner-lr or --learn-inner-temperature (MAML adapts the whole "
                        "network in its inner loop)")
    if args.inner_augment is not None and args.method not in ("maml", "fomaml"):
        raise UserError(f"--inner-augment warps the support copies of MAML's inner loop; {args.method} has none "
                        "(--augment warps every training image of any method)")
    if args.inner_params is not None and args.method not in ("maml", "fomaml"):
        raise UserError(f"--inner-params chooses what MAML's inner loop adapts; {args.method} has no inner loop")
    if args.learn_inner_temperature and args.method != "maml":
        raise UserError("--learn-inner-temperature needs second-order MAML (--method maml): the temperature shapes "
                        "the inner gradient, which first-order MAML's meta-gradient treats as a constant")
    if args.freeze_backbone and not args.init_backbone and not args.resume:
        raise UserError("--freeze-backbone keeps a trained encoder fixed: give it with --init-backbone CHECKPOINT")
    if args.episodes == 0 and not args.init_backbone and not args.resume:
        raise UserError("--episodes 0 would write an untrained model; give --episodes 1 or more (or --init-backbone "
                        "CHECKPOINT to keep a pre-trained encoder without training)")
    if args.alphabet_groups is not None:
        if args.dataset != "omniglot":
            raise UserError("--alphabet-groups groups Omniglot's characters by alphabet; a folder dataset has none")
        if not 2 <= args.alphabet_groups <= args.n_way:
            raise UserError(f"--alphabet-groups {args.alphabet_groups}: give 2 to --n-way ({args.n_way}) characters "
                            "per alphabet block")
    out = check_out_path(args.out, resume=args.resume)  # now, not after the run: no training is lost to a bad path
    device = resolve_device(args.device) if world is None else world.device
    rotations = False if args.no_rotations else None
    train_set = _load_dataset(args, args.train_split, image_size=args.image_size, rotations=rotations)
    if skipped_summary(train_set) and (world is None or world.is_main):
        print(skipped_summary(train_set), file=sys.stderr)
    val_set = None
    if args.val_every and args.dataset == "omniglot" and args.train_split == "train":
        val_set = load_omniglot(args.protocol, "val", data_dir=args.data_dir, image_size=args.image_size,
                                rotations=rotations)
    task = TaskConfig(args.n_way, args.n_shot, args.n_query)
    config = TrainConfig(episodes=args.episodes, meta_batch_size=args.meta_batch_size, meta_lr=args.meta_lr,
                         lr_schedule=args.lr_schedule, grad_clip=args.grad_clip, eval_every=args.val_every,
                         freeze_backbone=args.freeze_backbone,
                         eval_tasks=args.val_episodes, checkpoint_every=args.checkpoint_every, seed=args.seed,
                         batch_tasks=False if args.no_batch_tasks else True if args.batch_tasks else None)
    state: TrainState | None = None
    if args.resume:
        if not out.exists():
            raise UserError(f"--resume: {out} does not exist; run without --resume to start a new run")
        model, info = load_checkpoint(out, device, expect_method=args.method)
        if info.train_state is None:
            raise UserError(f"--resume: {out} holds no training state (it is a final export); start a new run")
        state = info.train_state
        if bool(info.metadata.get("augment")) != args.augment:
            raise UserError(f"--resume: {out} was trained {'with' if info.metadata.get('augment') else 'without'} "
                            "--augment; resume it with the same setting, or start a new run")
        if info.metadata.get("mix_shots") != args.mix_shots:
            raise UserError(f"--resume: {out} was trained with --mix-shots "
                            f"{' '.join(map(str, info.metadata.get('mix_shots') or [])) or 'off'}; resume it with the "
                            "same setting, or start a new run")
        if info.metadata.get("alphabet_groups") != args.alphabet_groups:
            raise UserError(f"--resume: {out} was trained with --alphabet-groups "
                            f"{info.metadata.get('alphabet_groups') or 'off'}; resume it with the same setting, or "
                            "start a new run")
        frozen = bool((info.metadata.get("train_config") or {}).get("freeze_backbone"))
        if frozen != args.freeze_backbone:
            raise UserError(f"--resume: {out} was trained {'with' if frozen else 'without'} --freeze-backbone; resume "
                            "it with the same setting, or start a new run")
        metadata = dict(info.metadata)
        metadata.setdefault("resumed_with", []).append(command_line())
    else:
        torch.manual_seed(args.seed)  # --seed fixes the initial weights too: the same command gives the same run
        model = build_model(args.method, **_method_kwargs(args, train_set)).to(device)
        metadata = {"command": command_line()}
        if args.init_backbone:
            source, source_info = load_checkpoint(args.init_backbone, device)
            try:
                copy_backbone(source, model)
            except ValueError as exc:
                raise UserError(f"--init-backbone: {exc}") from None
            metadata["init_backbone"] = {"checkpoint": str(args.init_backbone), "method": source_info["method"],
                                         "command": source_info.get("command")}
    metadata.update({
        "protocol": args.protocol if args.dataset == "omniglot" else None, "dataset": args.dataset,
        "data_dir": str(args.data_dir) if args.dataset == "folder" else None,
        "train_split": args.train_split, "rotations": args.dataset == "omniglot" and not args.no_rotations,
        "image_size": args.image_size, "in_channels": 1, "preprocess": {"center": args.dataset == "folder"},
        "n_way": args.n_way, "n_shot": args.n_shot, "n_query": args.n_query,
        "task_config": asdict(task), "train_config": asdict(config),
        "augment": AffineAugment().to_dict() if args.augment else None,
        "alphabet_groups": args.alphabet_groups,
        **({"mix_shots": args.mix_shots} if args.mix_shots else {}),
        **({"world_size": world.world_size, "backend": world.backend} if world is not None else {}),
        "class_names": train_set.class_names if args.dataset == "folder" else None,
    })
    if world is None:  # a run resumed in one process is no longer the torchrun run it continues
        for key in ("world_size", "backend"):
            metadata.pop(key, None)
    encoder = {id(p) for p in model.backbone.parameters()}
    if args.freeze_backbone and all(id(p) in encoder for p in model.parameters()):
        raise UserError(f"--freeze-backbone: {args.method} has no layers of its own besides the encoder, so nothing "
                        "would learn")
    _check_shape(model, args.n_way, args.method)
    # Tasks are assembled where the model lives: on a GPU the images stay on the GPU.
    train_set.to(device)
    shape = dict(augment=AffineAugment() if args.augment else None, alphabet_groups=args.alphabet_groups)
    sampler = (MixedShotSampler(train_set, args.n_way, args.mix_shots, args.n_query, seed=args.seed, **shape)
               if args.mix_shots else TaskSampler(train_set, args.n_way, args.n_shot, args.n_query, seed=args.seed,
                                                  **shape))
    validate = None
    if val_set is not None:
        val_set.to(device)
        val_way = min(args.n_way, len(val_set.class_names))

        def validate(m: FewShotClassifier) -> EvalResult:
            s = TaskSampler(val_set, val_way, args.n_shot, args.n_query, seed=12345)  # same val tasks every time
            return evaluate(m, (s.sample_task() for _ in range(args.val_episodes)))

    main_process = world is None or world.is_main  # under torchrun only rank 0 prints
    bar = _progress(args, args.episodes, state.step if state else 0) if main_process else None
    last_val: list[str] = []

    def on_step(log: StepLog) -> None:
        if log.val_accuracy is not None:
            last_val[:] = [f"{100 * log.val_accuracy:.2f}±{100 * log.val_ci95:.2f}"]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{log.loss:.3f}", acc=f"{log.accuracy:.3f}", **({"val": last_val[0]} if last_val else {}))

    def on_checkpoint(ts: TrainState) -> None:
        vals = [h for h in ts.history if "val_accuracy" in h]
        if vals:
            metadata["val_accuracy"], metadata["val_ci95"] = vals[-1]["val_accuracy"], vals[-1]["val_ci95"]
        metadata["steps_done"] = ts.step
        save_checkpoint(out, model, method=args.method, metadata=metadata, train_state=ts)

    try:
        result = train(model, sampler, config, on_step=on_step, validate=validate, on_checkpoint=on_checkpoint,
                       state=state, max_seconds=args.max_seconds, world=world)
    finally:
        if bar is not None:
            bar.close()
    msg = f"saved {out} after {result.steps} steps ({result.seconds:.0f} s)"
    if result.stopped_early:
        msg += f"; stopped by --max-seconds before step {args.episodes} (run again with --resume to continue)"
    if "val_accuracy" in metadata:
        msg += f"; validation accuracy {100 * metadata['val_accuracy']:.2f}% ± {100 * metadata['val_ci95']:.2f}"
    if main_process:
        print(msg, file=sys.stderr)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    check_out_path(args.out, resume=args.resume)  # now, not after the run: no training is lost to a bad path
    rotations = False if args.no_rotations else None
    load = dict(data_dir=args.data_dir, image_size=args.image_size, rotations=rotations)
    train_set = load_omniglot(args.protocol, args.train_split, **load)
    val_set = load_omniglot(args.protocol, "val", **load) if args.val_every and args.train_split == "train" else None
    metadata = {"command": command_line(), "protocol": args.protocol, "dataset": "omniglot",
                "train_split": args.train_split, "rotations": not args.no_rotations, "image_size": args.image_size,
                "in_channels": 1, "preprocess": {"center": False}, "role": "encoder"}
    steps = steps_for_epochs(args.epochs, len(train_set), args.batch_size)
    bar = _progress(args, steps, 0)
    on_step = None
    if bar is not None:
        def on_step(log: StepLog) -> None:
            if bar.n == 0 and log.step > 1:
                bar.update(log.step - 1)  # a resumed run
            bar.update(1)
            bar.set_postfix(loss=f"{log.loss:.3f}", batch_acc=f"{log.accuracy:.3f}")
    try:
        result, meta = pretrain_encoder(
            train_set, args.out, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
            lr_schedule=args.lr_schedule, weight_decay=args.weight_decay, hidden=args.hidden,
            augment=AffineAugment() if args.augment else None, seed=args.seed, val_set=val_set,
            val_every=args.val_every, val_episodes=args.val_episodes, checkpoint_every=args.checkpoint_every,
            max_seconds=args.max_seconds, resume=args.resume, device=device, metadata=metadata, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    msg = (f"saved {args.out} after {result.steps} steps, {meta['epochs_done']} epochs over "
           f"{len(train_set.class_names)} classes ({meta['train_seconds']:.0f} s, {meta['cpu_seconds']:.0f} CPU-seconds "
           "in all)")
    if result.stopped_early:
        msg += f"; stopped by --max-seconds before step {steps} (run again with --resume to continue)"
    if "val_accuracy" in meta:
        msg += (f"; ProtoNet on this encoder, {VAL_WAY}-way 1-shot validation: {100 * meta['val_accuracy']:.2f}% "
                f"± {100 * meta['val_ci95']:.2f}")
    print(msg + f"; start a model from it with `fewshot train ... --init-backbone {args.out}`", file=sys.stderr)
    return 0


def _configure_for_eval(model: FewShotClassifier, args: argparse.Namespace) -> None:
    options = {"steps": "inner_steps", "lr": "inner_lr", "temperature": "inner_temperature",
               "augment": "inner_augment", "params": "inner_params", "grad_clip": "inner_grad_clip"}
    loop = {key: getattr(args, name, None) for key, name in options.items()}
    given = ["--" + options[key].replace("_", "-") for key, value in loop.items() if value is not None]
    if given:
        if not isinstance(model, MAML):
            raise UserError(f"{given[0]} applies to maml/fomaml checkpoints only")
        try:
            model.set_test_inner_loop(**loop)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if getattr(args, "batch_norm", None) is not None:
        if not hasattr(model, "batch_norm"):
            raise UserError("--batch-norm applies to maml/fomaml checkpoints only")
        if (args.batch_norm == "running") != (model.batch_norm == "running"):  # type: ignore[attr-defined]
            raise UserError(f"--batch-norm {args.batch_norm}: this checkpoint was trained with batch_norm "
                            f"{model.batch_norm!r}; running statistics are kept only by models trained with them")
        model.batch_norm = args.batch_norm  # type: ignore[attr-defined]


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise UserError("--episodes must be at least 1: an accuracy needs at least one episode")
    device = resolve_device(args.device)
    model, info = load_checkpoint(args.checkpoint, device)
    reject_regressor(model, args.checkpoint)
    use_fast_layout(model)  # on a CPU, channels_last, as train() runs it
    meta = info.metadata
    _configure_for_eval(model, args)
    _check_shape(model, args.n_way, meta["method"])
    image_size = int(meta.get("image_size", 28))
    center = bool(meta.get("preprocess", {}).get("center", True))
    dataset = _load_dataset(args, args.split, image_size=image_size, rotations=None, center=center).to(device)
    if skipped_summary(dataset):
        print(skipped_summary(dataset), file=sys.stderr)
    if args.within_alphabet:
        if args.dataset != "omniglot" or args.protocol != "lake":
            raise UserError("--within-alphabet is Lake et al.'s task on Omniglot's own alphabets; use it with "
                            "--dataset omniglot --protocol lake")
        sampler = AlphabetTaskSampler(dataset, args.n_way, args.n_shot, args.n_query, seed=args.seed,
                                      alphabet=args.alphabet)
    elif args.alphabet is not None:
        raise UserError("--alphabet applies to --within-alphabet evaluation only")
    else:
        sampler = TaskSampler(dataset, args.n_way, args.n_shot, args.n_query, seed=args.seed)
    result = evaluate(model, (sampler.sample_task() for _ in range(args.episodes)))
    report = {"accuracy": result.accuracy, "ci95": result.ci95, "episodes": result.episodes, "n_way": args.n_way,
              "n_shot": args.n_shot, "n_query": args.n_query, "method": meta["method"],
              "protocol": args.protocol if args.dataset == "omniglot" else None, "dataset": args.dataset,
              "split": args.split if args.dataset == "omniglot" else None, "seed": args.seed,
              "checkpoint": str(args.checkpoint), "trained_protocol": meta.get("protocol"),
              **({"within_alphabet": True, "alphabet": args.alphabet} if args.within_alphabet else {})}
    for name in ("inner_steps_test", "inner_lr_test", "batch_norm"):
        if hasattr(model, name):
            report[name] = getattr(model, name)
    if getattr(model, "log_inner_lr", None) is not None:
        report["inner_lr_learned"] = True  # the per-layer rates of `fewshot info`, not inner_lr_test
    if getattr(model, "inner_augment", 0):
        report["inner_augment"] = model.inner_augment
    if getattr(model, "inner_params", "all") != "all":
        report["inner_params"] = model.inner_params
    temperature = model.inner_temperature_value() if hasattr(model, "inner_temperature_value") else 1.0
    if temperature != 1.0:
        report["inner_temperature"] = temperature
    if getattr(model, "inner_grad_clip", 0.0):
        report["inner_grad_clip"] = model.inner_grad_clip
    if getattr(dataset, "skipped", None):
        report["skipped"] = list(dataset.skipped)
    if args.json:
        print(dumps_json(report))
    else:
        where = f"{args.protocol}/{args.split}" if args.dataset == "omniglot" else args.data_dir
        if args.within_alphabet:
            where += f", within {args.alphabet or 'one alphabet'}, support and query by different drawers"
        print(f"{meta['method']} on {where}: {args.n_way}-way {args.n_shot}-shot accuracy "
              f"{100 * result.accuracy:.2f}% ± {100 * result.ci95:.2f} (95% CI, {result.episodes} episodes)")
    return 0


def _query_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = list_image_files(path)
            if not found:
                raise UserError(f"query folder {path} contains no image files")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"query {path} does not exist")
    return files


def cmd_predict(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, info = load_checkpoint(args.checkpoint, device)
    reject_regressor(model, args.checkpoint)
    meta = info.metadata
    image_size = int(meta.get("image_size", 28))
    support = (support_dataset(read_task(args.support), image_size) if Path(args.support).is_file()
               else FolderDataset(args.support, image_size, center=True, check_ink=True))
    if len(support.class_names) < 2:
        raise UserError(f"--support {args.support} has {len(support.class_names)} class with images; "
                        "few-shot classification needs at least 2 class subfolders")
    _check_shape(model, len(support.class_names), meta["method"])
    queries = []
    files = _query_files(args.query)
    for f in files:
        try:
            queries.append(preprocess_image(f, image_size, center=True, check_ink=True))
        except ImageError as exc:
            raise UserError(str(exc)) from exc
    labels = torch.tensor(support.get_labels())
    model.eval()
    with torch.no_grad():
        model.process_support_set(support.get_images(torch.arange(len(support))).to(device), labels.to(device))
        probabilities = torch.softmax(model(torch.stack(queries).to(device)), dim=1).cpu()
    if not bool(torch.isfinite(probabilities).all()):
        raise UserError(f"{args.checkpoint} gives answers that are not numbers (NaN) for these images; its settings "
                        "make the model diverge (e.g. a MAML inner learning rate too large), so no prediction is shown")
    predictions = []
    for f, p in zip(files, probabilities):
        predictions.append({"query": str(f), "label": support.class_names[int(p.argmax())],
                            "probabilities": {c: round(float(v), 6) for c, v in zip(support.class_names, p)}})
    if args.json:
        print(dumps_json({"predictions": predictions, "method": meta["method"], "skipped": support.skipped}))
    else:
        for skipped in support.skipped:
            print(f"skipped {skipped}", file=sys.stderr)
        for pred in predictions:
            print(f"{pred['query']}: {pred['label']} ({100 * pred['probabilities'][pred['label']]:.1f}%)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .checkpoints import read_checkpoint_info

    meta = read_checkpoint_info(args.checkpoint)
    public = {k: v for k, v in meta.items() if k not in ("train_state",)}
    public.setdefault("n_way", public.get("method_kwargs", {}).get("n_way"))
    kwargs = public.get("method_kwargs", {})
    if kwargs.get("learn_inner_lr") or kwargs.get("learn_inner_temperature"):  # values in the weights: load them
        model, _ = load_checkpoint(args.checkpoint)
        public["learned_inner_loop"] = model.learned_inner_loop()
    if args.json:
        print(dumps_json(public))
    else:
        for key in ("method", "protocol", "dataset", "n_way", "n_shot", "mix_shots", "n_query", "image_size", "steps_done",
                    "val_accuracy", "command", "saved_at"):
            if key in public:
                print(f"{key}: {public[key]}")
        print(f"method_kwargs: {json.dumps(public.get('method_kwargs', {}))}")
        learned = public.get("learned_inner_loop") or {}
        for step, rates in enumerate(learned.get("inner_lr", []), 1):
            values = list(rates.values())
            print(f"learned inner lr, step {step}: {min(values):.4g} to {max(values):.4g} "
                  f"(start {kwargs.get('inner_lr')}); " + ", ".join(f"{k} {v:.4g}" for k, v in rates.items()))
        if "inner_temperature" in learned:
            print(f"learned inner temperature: {learned['inner_temperature']:.4g} "
                  f"(start {kwargs.get('inner_temperature', 1.0)})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    check_out_path(args.out)
    model, info = load_checkpoint(args.checkpoint)
    metadata = {k: v for k, v in info.metadata.items() if k != "train_state"}  # save_checkpoint sets the rest anew
    metadata["exported_from"] = {"steps_done": info.metadata.get("steps_done"), "saved_at": info.metadata.get("saved_at")}
    save_checkpoint(args.out, model, method=info.metadata["method"], metadata=metadata)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


def cmd_soup(args: argparse.Namespace) -> int:
    check_out_path(args.out)
    if len({Path(p).resolve() for p in args.checkpoints}) < len(args.checkpoints):
        raise UserError("--checkpoints names one file twice; a soup averages different runs")
    loaded = [load_checkpoint(path) for path in args.checkpoints]
    check_soupable([(str(path), info.metadata) for path, (_, info) in zip(args.checkpoints, loaded)])
    model, first = loaded[0]
    model.load_state_dict(average_state_dicts([m for m, _ in loaded]))
    kept = INPUT_KEYS + ("n_way", "n_shot", "n_query", "task_config", "train_split", "data_dir", "class_names")
    metadata: dict[str, Any] = {"command": command_line(), **{k: first.metadata[k] for k in kept if k in first.metadata}}
    ingredients = [{"checkpoint": str(path), **training_summary(info.metadata)}
                   for path, (_, info) in zip(args.checkpoints, loaded)]
    metadata["soup"] = ingredients
    save_checkpoint(args.out, model, method=first.metadata["method"], metadata=metadata)
    print(f"wrote {args.out}: the average of {len(loaded)} {first.metadata['method']} models", file=sys.stderr)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    folder = download_omniglot(args.data_dir)
    print(f"Omniglot is in {folder}; use --data-dir {folder} or set FEWSHOT_DATA_DIR={folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "pretrain": cmd_pretrain, "evaluate": cmd_evaluate, "predict": cmd_predict, "info": cmd_info,
                "export": cmd_export, "soup": cmd_soup, "download": cmd_download, "train-sine": cmd_train_sine}
    try:
        check_arguments(args)  # the device and image size, for every subcommand, before any work
        return handlers[args.command](args)
    except (UserError, CheckpointError, DataNotFoundError, ImageError, NonFiniteLossError, ValueError) as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint written is intact (use --resume to continue)", file=sys.stderr)
        return 130
