"""The recommend contract: one request and one answer for every face that gives lists.

The faces are `graphrec recommend`, `graphrec.Recommender.recommend` and
`graphrec.Export.recommend`; they share implicit's names (docs/api.md)::

    ids, scores = face.recommend(userid, user_items=None, N=10, filter_already_liked_items=True,
                                 filter_items=None, recalculate_user=False, items=None)

The request:

* userid: one external user id (`ids` and `scores` are then 1-D, as implicit's) or a sequence /
  array of them (2-D, one row per user).
* user_items: the items each user has: a mapping user id -> item ids, or, as implicit takes it, a
  scipy sparse matrix with one row per user of `userid` and one column per item of the face's
  `item_ids` order. They are added to what the face already knows of the user (a known user's stored
  history; an export holds none); with `recalculate_user=True` a known user's vector is computed
  anew from that history and them together (in an export: from them alone), as for a user the face
  does not hold, who needs them.
* filter_already_liked_items: leave the user's items (given and stored) out of the list.
* filter_items: item ids left out of every list.
* items: the item ids to rank among (default: every item).

graphrec's earlier names are accepted: `k` for N, `filter_already_liked` for
filter_already_liked_items, `candidates` for items.

The answer, `Recommendations`, unpacks as implicit's pair: item ids (object array) and float32
scores, best first, [n_users, N] (a row with fewer candidates left than N is padded with None and
NaN), and `.to_frame()` gives graphrec's table `user_id, item_id, rank, score`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graphrec.core.errors import InputError
from graphrec.data.readers import normalize_id

DEFAULT_N = 10  # items per list, the same for every face (implicit's N)
# graphrec's earlier argument names -> implicit's, accepted by every face
ALIASES = {
    "k": "N",
    "filter_already_liked": "filter_already_liked_items",
    "candidates": "items",
}


@dataclass(frozen=True)
class ListRequest:
    """One recommend call, checked and in external ids (made by :func:`list_request`).

    Attributes:
        users: The external user ids asked for, in order.
        n: Items per user (implicit's N).
        filter_liked: Leave the users' items (given and stored) out of the lists.
        recalculate: `recalculate_user` was true: a known user given items is scored from them (the
            module doc), not from what the face stores alone.
        user_items: The items given for this call, per user given (an empty list: none).
        filter_items: Item ids left out of every list.
        items: Item ids to rank among; None: every item.
        single: One user id was given (the answer's arrays are 1-D).
    """

    users: list[str]
    n: int
    filter_liked: bool
    recalculate: bool
    # the items given for this call, per user given (an empty list: none)
    user_items: dict[str, list[str]]
    filter_items: list[str]
    items: list[str] | None  # None: every item
    single: bool  # one user id was given (the answer's arrays are 1-D)


def list_request(
    userid: Any,
    user_items: Any = None,
    N: int = DEFAULT_N,  # noqa: N803 (implicit's name)
    filter_already_liked_items: bool = True,
    filter_items: Any = None,
    recalculate_user: bool = False,
    items: Any = None,
    *,
    item_ids: Sequence[str],
    aliases: Mapping[str, Any] | None = None,
) -> ListRequest:
    """The checked request of a face's `recommend` arguments (the module doc).

    Args:
        userid: One external user id (the answer is then 1-D) or a sequence / array of them.
        user_items: The items each user has: a mapping user id -> item ids, or a scipy sparse matrix
            with one row per user of `userid` and one column per item of `item_ids`.
            (default: :obj:`None`: none)
        N: Items per user, a whole number of at least 1. (default: :obj:`10`)
        filter_already_liked_items: Leave the user's items (given and stored) out of the list.
            (default: :obj:`True`)
        filter_items: Item ids left out of every list. (default: :obj:`None`)
        recalculate_user: Compute a known user's vector from `user_items` (the module doc).
            (default: :obj:`False`)
        items: The item ids to rank among. (default: :obj:`None`: every item)
        item_ids: The face's items, in the order of a sparse `user_items`' columns.
        aliases: The face's other keyword arguments, of which only graphrec's earlier names are
            accepted (`k`, `filter_already_liked`, `candidates`). (default: :obj:`None`)

    Returns:
        The :class:`ListRequest`, ids in external form (text by the one id rule).

    Raises:
        TypeError: An alias that is not one of graphrec's earlier names (as for an unexpected
            keyword).
        InputError: A name given both as itself and as its former name; N not a whole number of at
            least 1; no user ids; `user_items` of the wrong shape or type, or naming a user not
            asked for.
    """
    given = {
        "N": N,
        "filter_already_liked_items": filter_already_liked_items,
        "items": items,
    }
    defaults = {"N": DEFAULT_N, "filter_already_liked_items": True, "items": None}
    for old, value in (aliases or {}).items():
        new = ALIASES.get(old)
        if new is None:
            raise TypeError(f"recommend() got an unexpected keyword argument {old!r}")
        default = defaults[new]
        if not (
            given[new] is None
            if default is None
            else type(given[new]) is type(default) and given[new] == default
        ):
            raise InputError(f"give {new} or its former name {old}, not both")
        given[new] = value
    n = given["N"]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(
            f"N (items per user) must be a whole number of at least 1, got {n!r}"
        )
    users = external_ids(userid)
    if not users:
        raise InputError("no user ids given")
    return ListRequest(
        users,
        int(n),
        bool(given["filter_already_liked_items"]),
        bool(recalculate_user),
        _user_items(user_items, users, item_ids),
        [] if filter_items is None else external_ids(filter_items),
        None if given["items"] is None else external_ids(given["items"]),
        isinstance(userid, (str, int, np.integer)),
    )


def external_ids(values: Any) -> list[str]:
    """Ids as the importer reads them, text by the one id rule (`normalize_id`).

    Args:
        values: One id (str or int) or an iterable of them.

    Returns:
        The ids as text, a list even for one id.
    """
    if isinstance(values, (str, int, np.integer)):
        return [normalize_id(values)]
    return [normalize_id(v) for v in values]


def _user_items(
    value: Any, users: list[str], item_ids: Sequence[str]
) -> dict[str, list[str]]:
    """Map user id -> item ids from a mapping, or from sparse rows aligned with `users`.

    A sparse matrix's columns are `item_ids`.

    Args:
        value: None, a mapping user id -> item ids (None: none), or a scipy sparse matrix.
        users: The user ids asked for, the rows of a sparse `value`.
        item_ids: The face's items, the columns of a sparse `value`.

    Returns:
        The items per user, ids in external form; empty when `value` is None.

    Raises:
        InputError: A sparse matrix not [len(users), len(item_ids)], a value of another type, or a
            mapping naming a user who is not among the users asked for.
    """
    if value is None:
        return {}
    if sp.issparse(value):
        rows = sp.csr_matrix(value)
        if rows.shape != (len(users), len(item_ids)):
            raise InputError(
                f"user_items is a {rows.shape[0]} x {rows.shape[1]} matrix; expected one row per user "
                f"({len(users)}) and one column per item ({len(item_ids)}, in item_ids order)"
            )
        rows.eliminate_zeros()
        return {
            u: [item_ids[j] for j in rows.indices[rows.indptr[r] : rows.indptr[r + 1]]]
            for r, u in enumerate(users)
        }
    if not isinstance(value, Mapping):
        raise InputError(
            f"user_items must be a mapping user id -> item ids or a scipy sparse matrix, got "
            f"{type(value).__name__}"
        )
    out = {
        normalize_id(u): [] if items is None else external_ids(items)
        for u, items in value.items()
    }
    extra = sorted(set(out) - set(users))
    if extra:
        raise InputError(
            f"user_items names user {extra[0]!r}, who is not among the users asked for"
        )
    return out


@dataclass(frozen=True)
class Recommendations:
    """Lists of several users, best first.

    `ids, scores = answer` unpacks as implicit's pair; `.to_frame()` gives graphrec's table.

    Attributes:
        user_ids: Object [n_users]: the users asked for.
        ids: Object [n_users, width]: item ids, None past the end of a shorter list.
        scores: Float32 [n_users, width]: NaN past the end of a shorter list.
        single: One user id was asked for: unpacks to 1-D arrays.

    Example::

        ids, scores = rec.recommend(["u1", "u2"], N=5)  # [2, 5] each
        table = rec.recommend("u1", N=5).to_frame()  # user_id, item_id, rank, score
    """

    user_ids: np.ndarray  # object [n_users]
    # object [n_users, width]: item ids, None past the end of a shorter list
    ids: np.ndarray
    scores: np.ndarray  # float32 [n_users, width]: NaN past the end of a shorter list
    single: bool = False  # one user id was asked for: unpacks to 1-D arrays

    @classmethod
    def of(
        cls,
        request: ListRequest,
        item_ids: Sequence[str],
        top: np.ndarray,
        scores: np.ndarray,
    ) -> Recommendations:
        """Build the answer from item indices `top` [n_users, width] (-1: no item) and their scores.

        Args:
            request: The request answered (its users, and whether one id was given).
            item_ids: The face's items, in index order.
            top: Item indices [n_users, width], -1 where a list has no more items.
            scores: Their scores, the same shape.

        Returns:
            The answer, with None ids and NaN scores where `top` is -1.
        """
        names = np.asarray(list(item_ids) + [None], dtype=object)  # index -1 reads None
        return cls(
            np.asarray(request.users, dtype=object),
            names[top],
            np.where(top >= 0, scores, np.nan).astype(np.float32),
            request.single,
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield the item ids, then the scores: `ids, scores = answer`.

        For a single user each is row 0 alone (1-D), as implicit's.
        """
        yield self.ids[0] if self.single else self.ids
        yield self.scores[0] if self.single else self.scores

    def to_frame(self) -> pd.DataFrame:
        """The lists as graphrec's table.

        Returns:
            Columns user_id, item_id, rank (1 = best), score; one row per listed item.
        """
        rows, rank = np.nonzero(self.ids != None)  # noqa: E711 (elementwise over an object array)
        return pd.DataFrame(
            {
                "user_id": self.user_ids[rows],
                "item_id": self.ids[rows, rank],
                "rank": (rank + 1).astype(np.int32),
                "score": self.scores[rows, rank],
            }
        )
