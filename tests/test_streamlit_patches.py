"""pages/lab/patches.py: an upload's URL answer survives the queue clear at the start of a script run; the start-up
component scan finds the same packages from metadata headers alone."""

from __future__ import annotations

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

from pages.lab import patches


def queue_with_an_upload_answer_waiting() -> ForwardMsgQueue:
    queue = ForwardMsgQueue()
    delta = ForwardMsg()
    delta.metadata.delta_path[:] = [0, 1]
    delta.delta.new_element.markdown.body = "an element of the run being replaced"
    queue.enqueue(delta)
    answer = ForwardMsg()
    answer.file_urls_response.response_id = "request-1"
    answer.file_urls_response.file_urls.add(file_id="f1", upload_url="/_stcore/upload_file/s/f1")
    queue.enqueue(answer)
    return queue


def kinds(queue: ForwardMsgQueue) -> list[str]:
    return [m.WhichOneof("type") for m in queue.flush()]


def test_streamlit_itself_drops_the_answer_when_a_run_starts():
    # the bug the patch exists for; if this fails, Streamlit keeps these answers itself and the patch can go
    original = getattr(ForwardMsgQueue.clear, "_fewshot_original", ForwardMsgQueue.clear)
    queue = queue_with_an_upload_answer_waiting()
    original(queue, retain_lifecycle_msgs=True)
    assert kinds(queue) == []


def test_patched_queue_keeps_the_answer_and_drops_the_rest():
    assert patches.keep_upload_answers_through_queue_clears()
    assert patches.keep_upload_answers_through_queue_clears()  # twice: still one patch
    queue = queue_with_an_upload_answer_waiting()
    queue.clear(retain_lifecycle_msgs=True)  # what a script run's start does
    msgs = queue.flush()
    assert [m.WhichOneof("type") for m in msgs] == ["file_urls_response"]
    assert msgs[0].file_urls_response.response_id == "request-1"
    queue = queue_with_an_upload_answer_waiting()
    queue.clear()  # a full flush still empties everything
    assert kinds(queue) == []


def test_component_filter_on_headers_alone_picks_the_same_packages():
    import importlib.metadata

    from streamlit.components.v2 import manifest_scanner

    assert patches.read_component_metadata_headers_only()
    assert patches.read_component_metadata_headers_only()  # twice: still one patch
    patched = manifest_scanner._is_likely_streamlit_component_package
    original = patched._fewshot_original
    dists = list(importlib.metadata.distributions())
    picked = [d.name for d in dists if patched(d)]
    assert picked == [d.name for d in dists if original(d)]
    assert "streamlit-drawable-canvas" in picked  # the drawing canvas is found and registered as before
    assert "torch" not in picked
    names = [m.name for m, _ in manifest_scanner.scan_component_manifests()]
    assert "streamlit-drawable-canvas" in names


def test_component_filter_reads_the_headers_not_the_description(tmp_path):
    # a package whose long description mentions Streamlit is not a component package by that alone
    import importlib.metadata

    from streamlit.components.v2 import manifest_scanner

    patches.read_component_metadata_headers_only()
    patched = manifest_scanner._is_likely_streamlit_component_package
    info = tmp_path / "plotting_helpers-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plotting-helpers\nVersion: 1.0\nSummary: Charts\n"
                                   "Requires-Dist: numpy\n\nWorks well inside a streamlit app.\n")
    dist = importlib.metadata.PathDistribution(info)
    assert not patched(dist) and not patched._fewshot_original(dist)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plotting-helpers\nVersion: 1.0\nSummary: Charts\n"
                                   "Requires-Dist: numpy\nRequires-Dist: streamlit>=1.40\n\nA description.\n")
    assert patched(dist) and patched._fewshot_original(dist)
