"""The Streamlit side of the few-shot lab, one module per concept. Pages import these modules' public names; the
computing itself lives in ``fewshot`` (``fewshot.inspection``), which never imports Streamlit.

Why inside ``pages/``: the top level is the user's layout (``app.py``, ``pages/``, ``fewshot/``, ``checkpoints/``,
``requirements.txt``, ``tests/``), and this package is the pages' own toolbox. ``app.py`` lists the pages with
``st.navigation``, and Streamlit's folder convention only ever looks at ``pages/*.py``, so nothing in here becomes
a page.

Dependencies point one way (no module imports one listed after it)::

    patches     the two Streamlit patches (upload answers, component scan)
    papers      published figures the pages compare with
    data        Omniglot for the pages
    images      PNG <-> model input, pictures of inputs
    session_models  models trained in this session (Watch meta-training), never on disk
    checkpoints checkpoints on disk, measured accuracies, cached models
    models      the model source of each task mode (drawn: checkpoints; photo: EfficientNet features)
    task        the typed task store, the modes, the one validator
    runtime     the router and run trace, process set-up
    examples    example tasks: installed into the store, or shown to a first visitor
    widgets     input widgets bound to the store (canvas, uploads, camera, true class)
    render      results and messages (probabilities, verdicts, the example banner, the problems box)
    points      point sets for the embedding explorer, 2-D maps
    sidebar     the shared sidebar (device, checkpoints)
    share       the task as one file: the Build page's download and task-file upload
    live_runs   this session's live meta-training run (Watch meta-training)

Importing ``pages.lab`` itself does nothing.
"""
