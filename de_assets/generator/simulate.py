"""Simulate what happens on one day: which users come, how many sessions, what each session does
(browse, sign up, log in, add to cart, see the experiment, check out, order), when each event
happens, is sent and is received. The events are routed to the day they arrive on."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from de_assets.generator.config import Dirt, ExperimentSpec
from de_assets.generator.population import UserPool
from de_assets.generator.records import Records, take
from de_assets.generator.vocabulary import (
    CAMPAIGNS,
    CATALOG,
    K_ADD,
    K_CHECKOUT,
    K_EXP,
    K_IDENTIFY,
    K_ORDER,
    K_PAGE,
    K_PV,
    K_SCREEN,
    K_SIGNUP,
    N_GENERAL,
    N_SITE_PAGES,
    P_CART,
    P_CHECKOUT,
    P_CONFIRM,
    P_LOGIN,
    P_SIGNUP,
    REFERRER_W,
    REFERRERS,
    SCREENS,
    SIGNUP_METHODS,
)
from de_assets.generator.window import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    STREAM_SESSIONS,
    STREAM_USERS,
    Window,
    time_of_day_ms,
    weekday_factor,
)

MEAN_EVENTS_PER_SESSION = 3.6  # used to size the day's sessions (the real mean is ~4.6 events)


class SessionSimulator:
    """Simulates day after day; ``arriving[day]`` collects the event records that arrive that day
    (``ev`` is the global event number that seeds the messageId)."""

    def __init__(self, window: Window, pool: UserPool, spec: ExperimentSpec, dirt: Dirt,
                 events_per_day: int) -> None:
        self.window, self.pool, self.spec, self.dirt = window, pool, spec, dirt
        self.events_per_day = events_per_day
        self.next_event = 0
        self.next_session = 1000
        self.srm_dropped_sessions = 0
        self.arriving: dict[int, list[Records]] = {}

    def simulate_day(self, d: int) -> None:
        """Simulate the sessions that happen on day d; route their events to arrival days."""
        rng = self.window.rng(STREAM_SESSIONS, d)
        n_target = int(round(self.events_per_day * weekday_factor(self.window.day(d))))
        if n_target <= 0:
            return
        users, signup = self._session_users(rng, d, n_target)
        s = SimpleNamespace(user=users, signup=signup, n=len(users))
        self._plan_funnel(rng, s)
        self._plan_basket(rng, s)
        self._plan_delivery(rng, d, s)
        events = self._events(rng, d, s)
        self._route(events, n_target, s.n)

    # ---- sessions ------------------------------------------------------------------------------
    def _session_users(self, rng: np.random.Generator, d: int, n_target: int) -> tuple[np.ndarray, np.ndarray]:
        """The user of each session of the day (shuffled) and whether the session signs the user up."""
        pool = self.pool
        n_sessions = int(math.ceil(n_target / MEAN_EVENTS_PER_SESSION)) + 20
        if pool.n == 0:  # users who existed before the window
            n_initial = max(50, int(2.5 * (self.events_per_day / MEAN_EVENTS_PER_SESSION + 20)))
            pool.add_users(
                self.window.rng(STREAM_USERS, 0),
                kind=(rng.random(n_initial) < 0.75).astype(np.int8),
                born=-rng.integers(1, 400, n_initial),
            )
        n_new_reg = int(rng.binomial(n_sessions, 0.09))
        n_new_anon = int(rng.binomial(n_sessions, 0.12))
        n_returning = n_sessions - n_new_reg - n_new_anon
        # returning users: weighted sample without replacement, then extra sessions for some
        age = d - pool["born"]
        weight = pool["w"] * (np.exp(-age / pool["tau"]) + 0.02)
        n_users = max(1, min(int(n_returning / 1.3), pool.n))
        keys = rng.exponential(size=pool.n) / weight
        if n_users < pool.n:
            chosen = np.sort(np.argpartition(keys, n_users - 1)[:n_users])
        else:
            chosen = np.arange(pool.n)
        p_extra = weight[chosen] / weight[chosen].sum()
        extra = chosen[rng.choice(len(chosen), size=max(0, n_returning - n_users), p=p_extra)]
        new_reg = pool.add_users(self.window.rng(STREAM_USERS, d + 1, 1), np.ones(n_new_reg, np.int8),
                                 np.full(n_new_reg, d))
        new_anon = pool.add_users(self.window.rng(STREAM_USERS, d + 1, 2), np.zeros(n_new_anon, np.int8),
                                  np.full(n_new_anon, d))
        users = np.concatenate([chosen, extra, new_reg, new_anon]).astype(np.int64)
        signup = np.concatenate(
            [np.zeros(len(chosen) + len(extra), bool), np.ones(n_new_reg, bool), np.zeros(n_new_anon, bool)]
        )
        perm = rng.permutation(len(users))
        return users[perm], signup[perm]

    def _plan_funnel(self, rng: np.random.Generator, s: SimpleNamespace) -> None:
        """How far each session goes: browse events, the signup/login block, the cart tail."""
        n, pool = s.n, self.pool
        s.registered = pool["kind"][s.user] == 1
        s.platform = pool["plat"][s.user]
        login = (~s.signup) & s.registered & (rng.random(n) < 0.04)
        s.block = np.where(s.signup, 2, np.where(login, 1, 0))  # signup: Signed Up + identify
        n_browse = rng.geometric(0.25, n) - 1
        s.add = rng.random(n) < np.where(s.registered, 0.20, 0.08)
        n_browse = np.where(s.add & (n_browse == 0), 1, n_browse)
        s.browse_before_block = rng.integers(0, np.where(s.add, n_browse, n_browse + 1))
        s.variant = pool["var"][s.user]
        srm = pool["srm"][s.user]
        s.n_exposures = np.where(s.add & ~srm, np.where(pool["cross"][s.user], 2, 1), 0)
        self.srm_dropped_sessions += int((s.add & srm).sum())
        treated = s.variant >= 1
        p_order = np.clip(0.35 * np.where(treated, 1.0 + self.spec.true_effect, 1.0), 0.0, 0.98)
        p_checkout = np.maximum(0.55, p_order)
        r = rng.random(n)
        # sessions that end in an order only because of the effect (r between the untreated and the
        # treated probability): the counterfactual "same user, same draws, no effect" has no order there
        s.caused = s.add & treated & (r >= 0.35) & (r < p_order)
        s.depth = np.where(s.add, np.where(r < p_order, 4, np.where(r < p_checkout, 3, 2)), 0)
        s.n_tail = np.where(s.add, 1 + s.n_exposures + (s.depth >= 3) + (s.depth >= 4), 0)
        s.length = 1 + n_browse + s.block + s.n_tail

    def _plan_basket(self, rng: np.random.Generator, s: SimpleNamespace) -> None:
        """The product in the cart, the campaign / referrer, the order's money fields (cents)."""
        n = s.n
        s.product = rng.choice(CATALOG["n"], size=n, p=CATALOG["pop"])
        s.qty = 1 + (rng.random(n) < 0.2).astype(np.int64) + (rng.random(n) < 0.05)
        s.campaign = np.where(rng.random(n) < 0.3, rng.integers(0, len(CAMPAIGNS), n), -1)
        campaign_ref = np.array([c[3] for c in CAMPAIGNS])
        organic_ref = rng.choice(len(REFERRERS), size=n, p=REFERRER_W / REFERRER_W.sum())
        s.referrer = np.where(s.campaign >= 0, campaign_ref[np.maximum(s.campaign, 0)], organic_ref)
        s.coupon = rng.random(n) < 0.1
        s.revenue_c = CATALOG["price_c"][s.product] * s.qty
        s.discount_c = np.where(s.coupon, np.round(s.revenue_c * 0.1), 0).astype(np.int64)
        s.shipping_c = np.where(s.revenue_c >= 5000, 0, 495)
        s.tax_c = np.round((s.revenue_c - s.discount_c) * 19 / 119).astype(np.int64)
        s.total_c = s.revenue_c - s.discount_c + s.shipping_c
        s.has_revenue = rng.random(n) >= 0.10  # ~10% of orders carry only `total`
        s.signup_method = rng.integers(0, len(SIGNUP_METHODS), n)

    def _plan_delivery(self, rng: np.random.Generator, d: int, s: SimpleNamespace) -> None:
        """Late sessions (delivered 1-5 days later), clock-skewed devices, the session start."""
        n = s.n
        late_days = np.where(rng.random(n) < self.dirt.late, rng.integers(1, 6, n), 0)
        s.late_days = np.where(d + late_days < self.window.days, late_days, 0)
        s.skew = (s.late_days == 0) & (rng.random(n) < self.dirt.clock_skew)
        s.skew_ms = np.where(
            s.skew,
            np.where(rng.random(n) < 0.5, -1, 1)
            * np.exp(rng.uniform(math.log(2 * MINUTE_MS), math.log(6 * HOUR_MS), n)),
            0,
        ).astype(np.int64)
        s.start = self.window.day_ms(d) + time_of_day_ms(rng, n)

    # ---- events --------------------------------------------------------------------------------
    def _events(self, rng: np.random.Generator, d: int, s: SimpleNamespace) -> Records:
        """One record per event of the day's sessions (session order, then position)."""
        n_events = int(s.length.sum())
        e = SimpleNamespace(n=n_events, session=np.repeat(np.arange(s.n), s.length))
        first_pos = np.cumsum(s.length) - s.length
        e.pos = np.arange(n_events) - first_pos[e.session]
        gaps = np.clip(rng.lognormal(math.log(18_000), 1.0, n_events), 300, 25 * MINUTE_MS).astype(np.int64)
        gaps[first_pos] = 0
        cum_gaps = np.cumsum(gaps)
        e.offset = cum_gaps - cum_gaps[first_pos][e.session]
        duration = e.offset[first_pos + s.length - 1]
        self._separate_sessions_of_a_user(rng, s, duration)
        self._event_kinds(rng, s, e)
        self._event_pages(rng, s, e)
        self._event_times(rng, d, s, e)
        # signup time becomes the account creation time
        signed_up = e.kind == K_SIGNUP
        self.pool.columns["created"][s.user[e.session[signed_up]]] = e.time[signed_up]
        i = e.session
        return {
            "uidx": s.user[i],
            "has_uid": e.has_user_id.astype(np.int8),
            "kind": e.kind,
            "T": e.time,
            "ts": e.ts,
            "sent": e.sent,
            "recv": e.recv,
            "page": e.page.astype(np.int16),
            "prod": e.product.astype(np.int16),
            "qty": s.qty[i].astype(np.int8),
            "camp": s.campaign[i].astype(np.int8),
            "ref": s.referrer[i].astype(np.int8),
            "pos0": e.landing.astype(np.int8),
            "sess": (self.next_session + i).astype(np.int64),
            "rev_c": s.revenue_c[i],
            "ship_c": s.shipping_c[i].astype(np.int64),
            "tax_c": s.tax_c[i],
            "disc_c": s.discount_c[i],
            "tot_c": s.total_c[i],
            "coupon": s.coupon[i].astype(np.int8),
            "has_rev": s.has_revenue[i].astype(np.int8),
            "caused": s.caused[i].astype(np.int8),
            "var": e.variant.astype(np.int8),
            "screen": e.screen.astype(np.int8),
            "method": s.signup_method[i].astype(np.int8),
            "late": e.late,
            "skew": s.skew[i],
        }

    def _separate_sessions_of_a_user(self, rng: np.random.Generator, s: SimpleNamespace,
                                     duration: np.ndarray) -> None:
        """Sessions of the same user are separated by more than 30 minutes: push later ones back."""
        order = np.lexsort((s.start, s.user))
        users_sorted = s.user[order]
        new_user = np.r_[True, users_sorted[1:] != users_sorted[:-1]]
        user_first = np.maximum.accumulate(np.where(new_user, np.arange(s.n), 0))
        rank = np.arange(s.n) - user_first  # n-th session of its user
        start, dur = s.start[order].copy(), duration[order]
        pause = (31 * MINUTE_MS + rng.exponential(60 * MINUTE_MS, s.n)).astype(np.int64)
        for k in range(1, int(rank.max()) + 1 if s.n else 1):
            i = np.nonzero(rank == k)[0]
            start[i] = np.maximum(start[i], start[i - 1] + dur[i - 1] + pause[i])
        s.start[order] = start

    def _event_kinds(self, rng: np.random.Generator, s: SimpleNamespace, e: SimpleNamespace) -> None:
        """Landing page/screen, browsing, the signup/login block, then the cart tail
        (Product Added, Experiment Viewed x n, Checkout Started, Order Completed)."""
        i, pos = e.session, e.pos
        tail_start = s.length[i] - s.n_tail[i]
        block_start = 1 + s.browse_before_block[i]
        block = s.block[i]
        is_tail = pos >= tail_start
        e.tail_pos = pos - tail_start
        is_block = (pos >= block_start) & (pos < block_start + block)
        e.landing = pos == 0
        e.forced_view = s.add[i] & (pos == tail_start - 1)  # the product added was viewed just before
        product_view = (~e.landing & ~is_tail & ~is_block) & ((rng.random(e.n) < 0.5) | e.forced_view)
        n_exposures = s.n_exposures[i]
        pagelike = np.where(s.platform[i] > 0, K_SCREEN, K_PAGE)
        e.kind = np.select(
            [
                e.landing,
                is_block & (block == 2) & (pos == block_start),
                is_block,
                is_tail & (e.tail_pos == 0),
                is_tail & (e.tail_pos <= n_exposures),
                is_tail & (e.tail_pos == n_exposures + 1) & (s.depth[i] >= 3),
                is_tail,
                product_view,
            ],
            [pagelike, K_SIGNUP, K_IDENTIFY, K_ADD, K_EXP, K_CHECKOUT, K_ORDER, K_PV],
            default=pagelike,
        ).astype(np.int8)
        e.has_user_id = s.registered[i] & ~(s.signup[i] & (pos < block_start))
        e.is_tail = is_tail

    def _event_pages(self, rng: np.random.Generator, s: SimpleNamespace, e: SimpleNamespace) -> None:
        """Product, page and screen of each event; the variant its exposure logs (crossover: the
        second exposure names the next arm)."""
        i, kind = e.session, e.kind
        e.product = np.where(e.is_tail | e.forced_view, s.product[i],
                             rng.choice(CATALOG["n"], size=e.n, p=CATALOG["pop"]))
        general_page = np.minimum(rng.zipf(1.6, e.n) - 1, N_GENERAL - 1)
        e.page = np.select(
            [
                (kind == K_PAGE) & e.landing & (s.campaign[i] >= 0),
                kind == K_PAGE,
                (kind == K_PV) | (kind == K_ADD),
                kind == K_EXP,
                kind == K_CHECKOUT,
                kind == K_ORDER,
                s.signup[i],
            ],
            [N_SITE_PAGES + e.product, general_page, N_SITE_PAGES + e.product, P_CART, P_CHECKOUT, P_CONFIRM,
             P_SIGNUP],
            default=P_LOGIN,
        )
        e.screen = np.where(e.landing, 0, np.where(kind == K_PV, 3, rng.integers(0, len(SCREENS), e.n)))
        e.variant = np.where((kind == K_EXP) & (e.tail_pos == 2), (s.variant[i] + 1) % len(self.spec.variants),
                             s.variant[i])

    def _event_times(self, rng: np.random.Generator, d: int, s: SimpleNamespace, e: SimpleNamespace) -> None:
        """True time, device timestamp (skewed clocks), sentAt and receivedAt of each event."""
        i = e.session
        e.time = s.start[i] + e.offset
        skew = s.skew_ms[i]
        sent_delay = rng.integers(50, 1500, e.n)
        network = rng.integers(20, 800, e.n)
        e.ts = e.time + skew
        e.sent = e.time + sent_delay + skew
        e.recv = e.time + sent_delay + network
        e.late = s.late_days[i] > 0
        if e.late.any():  # offline device: the session is delivered in one burst k days later
            arrival = self.window.start_ms + (d + s.late_days) * DAY_MS + time_of_day_ms(rng, s.n)
            recv_late = arrival[i] + e.pos * 40 + rng.integers(0, 30, e.n)
            sent_late = recv_late - rng.integers(20, 800, e.n)
            e.recv = np.where(e.late, recv_late, e.recv)
            e.sent = np.where(e.late, sent_late, e.sent)

    def _route(self, events: Records, n_target: int, n_sessions: int) -> None:
        """Keep exactly ``n_target`` events (sessions are in random order; the last one is cut)
        and queue them for the day they arrive on (none after the window)."""
        keep = min(n_target, len(events["kind"]))
        events = {k: v[:keep] for k, v in events.items()}
        events["ev"] = np.arange(self.next_event, self.next_event + keep, dtype=np.int64)
        self.next_event += keep
        self.next_session += n_sessions
        arrival = self.window.arrival_day(events["recv"])
        for a in np.unique(arrival):
            if a >= self.window.days:
                continue  # would arrive after the last day: not delivered in this window
            self.arriving.setdefault(int(a), []).append(take(events, np.nonzero(arrival == a)[0]))
