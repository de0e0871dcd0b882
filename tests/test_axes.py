"""lecture_lib.axes: plain-number tick labels at 1, 2, 5 x powers of ten on log axes."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lecture_lib.axes import label_log_axis, plain_number  # noqa: E402


def test_plain_number():
    assert plain_number(1000) == "1,000"
    assert plain_number(2) == "2"
    assert plain_number(0.5) == "0.5"
    assert plain_number(0.002) == "0.002"
    assert plain_number(0.125) == "0.125"
    assert plain_number(0) == "0"
    assert plain_number(2e-6) == "2e-06"


def test_label_log_axis_ticks_and_labels():
    fig, ax = plt.subplots()
    ax.loglog([1, 1000], [0.1, 30])
    label_log_axis(ax.yaxis)
    ax.set_ylim(0.1, 30)
    fig.canvas.draw()
    ticks = [t for t in ax.get_yticks() if 0.1 <= t <= 30]
    assert [round(t, 6) for t in ticks] == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20]
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert {"0.1", "0.2", "0.5", "1", "2", "5", "10", "20"} <= set(labels)
    assert not any("10^" in s or "$" in s for s in labels)
    assert all(t.get_text() == "" for t in ax.yaxis.get_minorticklabels())
    plt.close(fig)
