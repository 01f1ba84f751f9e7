"""Sharing a task as one file (``fewshot.taskfile``): the Build page's download button and task-file uploader.

A teacher downloads the task they built; a student loads it and gets the same task: class names, support images
per class, queries with their true classes, K-shot and the mode. A file that cannot be used is refused with one
message and the task the person has is kept.
"""

from __future__ import annotations

import hashlib

import streamlit as st

import fewshot

from . import task
from .runtime import trace

FILE_NAME = "fewshot-task.zip"
_CACHE_KEY = "share_file"  # (content key, zip bytes or None, why not)
_MESSAGE_KEY = "share_message"  # (kind, text) of the last load, shown once
_GENERATION_KEY = "share_uploader_generation"
SOURCE = "file"  # the upload source of a loaded task's images


def shared_task(view: task.TaskView) -> fewshot.SharedTask:
    """The task as ``fewshot`` writes it: names, images with their labels, true classes, K-shot and mode."""
    mode = task.MODES[view.mode]
    counts = [len(examples) for examples in view.support] or [1]
    n_shot = task.store().n_shot if mode.strict_shot else max(1, min(task.MAX_SHOT, max(counts)))
    return fewshot.SharedTask(
        list(view.names), [[fewshot.TaskImage(ex.png, ex.label) for ex in examples] for examples in view.support],
        [fewshot.TaskImage(q.png, q.label) for q in view.queries], list(view.truth), n_shot, view.mode)


def _content_key(shared: fewshot.SharedTask) -> str:
    h = hashlib.sha1(repr((shared.class_names, shared.true_classes, shared.n_shot, shared.mode)).encode())
    for image in [im for examples in shared.support for im in examples] + list(shared.queries):
        h.update(b"|" + image.name.encode() + b"|")
        h.update(image.png)
    h.update(str([len(examples) for examples in shared.support]).encode())
    return h.hexdigest()


def task_file(view: task.TaskView) -> tuple[bytes | None, str | None]:
    """``(zip bytes, None)``, or ``(None, why the task cannot be shared yet)``; built once per task content."""
    shared = shared_task(view)
    key = _content_key(shared)
    cached = st.session_state.get(_CACHE_KEY)
    if cached and cached[0] == key:
        return cached[1], cached[2]
    try:
        data, problem = fewshot.write_task(shared), None
    except fewshot.TaskFileError as exc:
        data, problem = None, str(exc)
    st.session_state[_CACHE_KEY] = (key, data, problem)
    return data, problem


def install(shared: fewshot.SharedTask) -> None:
    """Make ``shared`` the current task of its mode (the other mode's images stay), images named as in the file."""
    task.replace(shared.mode, list(shared.class_names), [[im.png for im in examples] for examples in shared.support],
                 list(zip([q.png for q in shared.queries], shared.true_classes)), SOURCE, n_shot=shared.n_shot)
    s = task.store()
    mode = task.MODES[shared.mode]
    for i, examples in enumerate(shared.support):
        for upload, image in zip(s.uploads[mode.support_slot(i)].values(), examples):
            upload.name = image.name or upload.name
    for upload, image in zip(s.uploads[mode.query_slot].values(), shared.queries):
        upload.name = image.name or upload.name


def _uploader_key() -> str:
    return f"task_file_{st.session_state.get(_GENERATION_KEY, 0)}"


def _load(key: str, mode_key: str) -> None:
    """Callback of the task-file uploader: read the file; install it, or say why not and keep the task."""
    uploaded = st.session_state.get(key)
    if uploaded is None:
        return
    st.session_state[_GENERATION_KEY] = st.session_state.get(_GENERATION_KEY, 0) + 1  # a fresh, empty uploader
    try:
        shared = fewshot.read_task(uploaded.getvalue(), folder_mode=mode_key)
    except fewshot.TaskFileError as exc:
        st.session_state[_MESSAGE_KEY] = ("error", f"{uploaded.name} was not loaded: {exc}. Your task is unchanged.")
        trace("task_file:refused")
        return
    install(shared)
    queries = f", {len(shared.queries)} queries" if shared.queries else ""
    st.session_state[_MESSAGE_KEY] = ("success", f"Loaded {uploaded.name}: {shared.n_way} classes, "
                                                  f"{sum(map(len, shared.support))} examples{queries} "
                                                  f"({task.MODES[shared.mode].title.lower()}).")
    trace("task_file:loaded")


def panel(view: task.TaskView, mode: task.Mode) -> None:
    """The Build page's "Share this task" box: download the task as one file, or load one."""
    message = st.session_state.pop(_MESSAGE_KEY, None)
    with st.expander("Share this task: download it as one file, or load one", expanded=message is not None):
        left, right = st.columns(2)
        with left:
            data, problem = task_file(view)
            st.download_button("Download this task (.zip)", data=data or b"", file_name=FILE_NAME,
                               mime="application/zip", key="task_download", disabled=data is None,
                               icon=":material/download:",
                               help="One zip with the images (PNG) and a manifest: class names, support and query "
                                    "images, true classes, K-shot and the mode. Load it on any machine to get the "
                                    "same task back, or run `fewshot predict --support task.zip` on it.")
            if problem:
                st.caption(f"Not ready to share yet: {problem}.")
        with right:
            key = _uploader_key()
            st.file_uploader("Load a task file (.zip), or a zip of class folders", type=["zip"], key=key,
                             on_change=_load, args=(key, mode.key),
                             help="A task saved with the button on the left, or a zip of class subfolders "
                                  "(cat/1.png, dog/1.png: every image an example). It replaces the current "
                                  f"{mode.title.lower()} task.")
        if message is not None:
            (st.success if message[0] == "success" else st.error)(message[1])
