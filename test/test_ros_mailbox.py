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


def test_camera_mailboxes_take_every_ready_camera_newest_first_and_count_per_camera():
    from semla_ros.ros.mailbox import CameraMailboxes

    box = CameraMailboxes(["front", "left", "right"])
    box.put("left", "l1")
    box.put("front", "f1")
    box.put("left", "l2")          # replaces l1
    assert box.take_ready(0) == [("front", "f1"), ("left", "l2")]   # camera order; the silent right camera absent
    assert box.replaced_by_camera == {"front": 0, "left": 1, "right": 0} and box.replaced == 1
    assert box.take_ready(0.01) == []
    box.put("right", "r1")
    box.clear()                    # deactivate: queued frames are dropped, not counted
    assert box.take_ready(0) == [] and box.replaced == 1


def test_camera_mailboxes_wake_for_any_camera_and_close():
    from semla_ros.ros.mailbox import CameraMailboxes

    box = CameraMailboxes(["front", "left"])
    threading.Timer(0.05, box.put, args=("left", "frame")).start()
    assert box.take_ready(5.0) == [("left", "frame")]
    box.close()
    assert box.put("front", "late") is False and box.take_ready(0) == [] and box.closed


def test_a_gathering_take_waits_for_every_camera_while_asked_to():
    """An inference worker whose turn starts while another worker's forward runs waits for every camera's
    frame (woken by each put), so one fuller forward follows and no camera is left out of turns."""
    from semla_ros.ros.mailbox import CameraMailboxes

    box = CameraMailboxes(["front", "left", "rear"])
    box.put("front", "f1")
    taken = []
    taker = threading.Thread(target=lambda: taken.append(box.take_ready(30.0, gather=lambda: True)))
    taker.start()
    box.put("left", "l1")
    taker.join(0.2)
    assert taker.is_alive() and taken == []      # rear has no frame yet
    box.put("rear", "r1")
    taker.join(10)
    assert taken == [[("front", "f1"), ("left", "l1"), ("rear", "r1")]]


def test_a_gathering_take_stops_when_asked_and_at_its_timeout():
    """A camera that stopped holds a turn up only while `gather` says so (the other forward ended: `nudge`),
    and never longer than the timeout."""
    from semla_ros.ros.mailbox import CameraMailboxes

    box = CameraMailboxes(["front", "rear"])
    box.put("front", "f1")
    busy = threading.Event()
    busy.set()
    taken = []
    taker = threading.Thread(target=lambda: taken.append(box.take_ready(30.0, gather=busy.is_set)))
    taker.start()
    taker.join(0.2)
    assert taker.is_alive()
    busy.clear()                                  # the other worker's forward ended
    box.nudge()
    taker.join(10)
    assert taken == [[("front", "f1")]]
    box.put("front", "f2")
    assert box.take_ready(0.05, gather=lambda: True) == [("front", "f2")]   # bounded by its timeout
