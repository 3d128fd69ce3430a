"""The client's SSE parsing and resumption state, pure: messages only on their blank line, ids kept, repeats
dropped, the resume header carrying the last id handed out."""

from __future__ import annotations

from weft_client.events import Resumption, SseParser, run_event


def _feed(parser: SseParser, text: str):
    return [m for line in text.split("\n") if (m := parser.line(line.rstrip("\r"))) is not None]


def test_messages_are_complete_only_on_their_blank_line():
    parser = SseParser()
    assert _feed(parser, 'event: connected\ndata: {"type":"connected"}\n\nid: 7\nevent: step_start\ndata: {"type"') \
        [0].event == "connected"
    # The cut-off second message is not handed out; the next complete one is, on its own.
    later = _feed(SseParser(), 'id: 8\nevent: step_start\ndata: {"type":"step_start","stepId":"a","data":{}}\n\n')
    event = run_event(later[0])
    assert (event.id, event.type, event.step_id) == (8, "step_start", "a")


def test_comments_heartbeats_and_multiline_data():
    parser = SseParser()
    messages = _feed(parser, ': heartbeat\n\ndata: one\ndata: two\n\n: reconnect: buffer overflow\n')
    assert [m.data for m in messages] == ["one\ntwo"]
    assert parser.last_comment == "reconnect: buffer overflow"
    assert run_event(messages[0]) is None  # no id: not a run event


def test_resumption_drops_repeats_and_resumes_after_the_last_id():
    state = Resumption()
    assert "Last-Event-ID" not in state.headers()
    parsed = _feed(SseParser(), 'id: 5\ndata: {"type":"run_event","eventType":"RunStarted","data":{}}\n\n'
                                'id: 9\ndata: {"type":"workflow_complete","data":{"status":"completed"}}\n\n')
    first, last = (run_event(m) for m in parsed)
    assert state.accept(first) and not state.accept(first)
    assert state.headers()["Last-Event-ID"] == "5" and not state.finished
    assert state.accept(last) and state.finished and state.headers()["Last-Event-ID"] == "9"
