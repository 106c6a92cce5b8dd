from bench.features import rates_by_tenth, reached_at


def test_rates_by_tenth_leave_out_the_start_up_tenth() -> None:
    # 1000 events: the first 100 take 5 s (start-up), then 100 per second
    progress = [(5.0 + t, 100 * (t + 1)) for t in range(10)]
    assert rates_by_tenth(progress, 1000) == [100] * 9


def test_a_slowing_job_shows_in_the_later_tenths() -> None:
    progress = [(1.0, 100), (2.0, 200), (3.0, 300), (4.0, 400), (5.0, 500),
                (7.0, 600), (9.0, 700), (11.0, 800), (13.0, 900), (15.0, 1000)]  # fmt: skip
    assert rates_by_tenth(progress, 1000) == [100, 100, 100, 100, 50, 50, 50, 50, 50]


def test_tenths_within_one_poll_or_never_reached_have_no_rate() -> None:
    progress = [(1.0, 100), (2.0, 300), (3.0, 400)]
    assert rates_by_tenth(progress, 1000) == [100, None, 100, None, None, None, None, None, None]


def test_reached_at_is_the_first_poll_at_or_past_the_count() -> None:
    progress = [(1.0, 100), (2.0, 300), (3.0, 400)]
    assert reached_at(progress, 300) == 2.0
    assert reached_at(progress, 250) == 2.0
    assert reached_at(progress, 401) is None
