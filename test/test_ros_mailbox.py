"""The one-slot mailbox between the image callback and the inference thread."""
import threading
import time

from semla_ros.ros.mailbox import LatestFrameMailbox


def test_newest_wins_and_replacements_are_counted():
    box = LatestFrameMailbox()
    assert box.put(1) is False
    assert box.put(2) is True
    assert box.put(3) is True
    assert box.replaced == 2
    assert box.take(0) == 3
    assert box.take(0.01) is None  # empty again: nothing is delivered twice
    assert box.put(4) is False


def test_take_waits_for_a_put_from_another_thread():
    box = LatestFrameMailbox()
    threading.Timer(0.05, box.put, args=("frame",)).start()
    assert box.take(5.0) == "frame"


def test_close_wakes_a_waiting_taker_and_refuses_items():
    box = LatestFrameMailbox()
    result = []
    taker = threading.Thread(target=lambda: result.append(box.take(30.0)))
    taker.start()
    time.sleep(0.05)
    box.close()
    taker.join(5.0)
    assert not taker.is_alive() and result == [None]
    box.put("late")
    assert box.take(0) is None and box.closed
