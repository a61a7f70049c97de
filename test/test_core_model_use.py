"""ModelUse: forwards share the model; a change waits for the forwards running and holds new ones off."""
import threading

import pytest

from semla_ros.core.model_use import ModelUse


def test_a_change_waits_for_the_forwards_and_no_forward_starts_while_it_waits():
    use = ModelUse()
    use.share()
    use.share()                       # two forwards at once
    assert use.forwards == 2
    order: list[str] = []

    def change():
        with use.change():
            order.append("change")

    changer = threading.Thread(target=change)
    changer.start()
    changer.join(0.2)
    assert changer.is_alive() and order == []   # still waiting: two forwards hold the model

    def late_forward():
        use.share()
        order.append("late forward")
        use.unshare()

    late = threading.Thread(target=late_forward)
    late.start()
    late.join(0.2)
    assert late.is_alive(), "a forward started while a change was waiting"
    use.unshare()
    changer.join(0.2)
    assert changer.is_alive() and order == []   # one forward still holds it
    use.unshare()
    changer.join(10)
    late.join(10)
    assert order == ["change", "late forward"] and use.forwards == 0


def test_unshare_without_share_is_refused():
    with pytest.raises(RuntimeError, match="without share"):
        ModelUse().unshare()


def test_a_change_that_raises_lets_the_model_go():
    use = ModelUse()
    with pytest.raises(ValueError), use.change():
        raise ValueError("failed swap")
    use.share()                        # would wait forever if the change still held the model
    use.unshare()
