"""TurnOrder (several inference workers): turns publish in the order they were taken, whatever order their
forwards end in; how many workers `inference_workers` gives, and the cores each worker's forward gets."""
import os
import threading

import torch

from semla_ros.ros.turns import TurnOrder, share_cores, worker_count


def test_turns_publish_in_ticket_order_though_later_ones_finish_first():
    turns = TurnOrder()
    with turns.taking():
        tickets = [turns.ticket() for _ in range(3)]
    assert tickets == [0, 1, 2]
    published: list[int] = []

    def publish(ticket):
        with turns.publishing(ticket):
            published.append(ticket)

    later = [threading.Thread(target=publish, args=(t,)) for t in (2, 1)]   # their forwards ended first
    for thread in later:
        thread.start()
    for thread in later:
        thread.join(0.2)
        assert thread.is_alive()           # waiting for turn 0
    assert published == []
    publish(0)
    for thread in later:
        thread.join(10)
    assert published == [0, 1, 2]


def test_a_failed_turn_still_passes_its_place_on():
    turns = TurnOrder()
    first, second = turns.ticket(), turns.ticket()
    try:
        with turns.publishing(first):
            raise RuntimeError("inference failed")
    except RuntimeError:
        pass
    with turns.publishing(second):     # would wait forever if the failed turn kept its place
        pass


def test_worker_count():
    cores = os.cpu_count() or 1
    assert worker_count(3, 1) == 3                       # asked for: as asked
    assert worker_count(0, 1) == 1                       # one camera: one worker, as before
    assert worker_count(0, 3) == min(3, cores)           # one per camera, at most the cores
    assert worker_count(0, 64) == cores


def test_share_cores_gives_each_worker_its_share_of_the_threads():
    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    try:
        assert share_cores(1) == cores and torch.get_num_threads() == cores
        assert share_cores(2) == max(1, cores // 2) and torch.get_num_threads() == max(1, cores // 2)
        assert share_cores(cores * 4) == 1 and torch.get_num_threads() == 1   # never none
    finally:
        torch.set_num_threads(before)

