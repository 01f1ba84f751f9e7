"""streamlit_patches.py: an upload's URL answer survives the queue clear at the start of a script run."""

from __future__ import annotations

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

import streamlit_patches


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
    assert streamlit_patches.keep_upload_answers_through_queue_clears()
    assert streamlit_patches.keep_upload_answers_through_queue_clears()  # twice: still one patch
    queue = queue_with_an_upload_answer_waiting()
    queue.clear(retain_lifecycle_msgs=True)  # what a script run's start does
    msgs = queue.flush()
    assert [m.WhichOneof("type") for m in msgs] == ["file_urls_response"]
    assert msgs[0].file_urls_response.response_id == "request-1"
    queue = queue_with_an_upload_answer_waiting()
    queue.clear()  # a full flush still empties everything
    assert kinds(queue) == []
