"""New data checked against the data a network was trained on, before any work: the task, the
feature columns by name (missing, extra, reordered), the target, the classes."""

from __future__ import annotations

from typing import Any

from .tensors import DataError


class DataMismatch(DataError):
    """The data does not fit the network it would train or be evaluated with; the message names
    the difference and the fix."""


def _names(values) -> str:
    shown = [str(v) for v in values]
    return ", ".join(shown[:12]) + (f", ... ({len(shown)} in all)" if len(shown) > 12 else "")


def _quoted(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def check_against(recorded: dict[str, Any], found: dict[str, Any], where: str) -> None:
    """Refuse data (``found``: a data set's ``info()``) that differs from what the network was
    trained on (``recorded``: its ``data_info``) in a way that would make training or evaluation
    silently wrong, or fail midway.

    Args:
        recorded: the checkpoint's ``data_info``.
        found: ``describe_data`` of the new data.
        where: names the data in the message (e.g. ``data.path=week2.csv``).

    Raises:
        DataMismatch: one line naming the first difference (task; feature columns missing, extra
            or in another order, by name when both name them, else their number; target name;
            number of classes or their names; number of regression outputs) and the fix.
    """
    task, rec_task = found.get("task"), recorded.get("task")
    if rec_task and task != rec_task:
        raise DataMismatch(f"{where} is a {task} data set, the network was trained for {rec_task}; "
                           f"give data of the same task (data.task={rec_task} if the labels allow it)")
    have, want = _as_list(found.get("feature_names")), _as_list(recorded.get("feature_names"))
    if have is not None and want is not None:
        missing = [n for n in want if n not in have]
        extra = [n for n in have if n not in want]
        if missing or extra:
            parts = ([f"lacks column{'s' * (len(missing) > 1)} {_quoted(missing)}"] if missing else []) + \
                    ([f"has column{'s' * (len(extra) > 1)} {_quoted(extra)} the network was not trained on"] if extra else [])
            raise DataMismatch(f"{where} {' and '.join(parts)}; the network takes the columns {_names(want)}")
        if have != want:
            moved = next((n for n, m in zip(have, want, strict=False) if n != m), have[-1])
            raise DataMismatch(f"{where} has the network's columns in another order (first out of place: '{moved}'); "
                               f"write them in the order {_names(want)}")
    if found.get("input_dim") != recorded.get("input_dim") and recorded.get("input_dim") is not None:
        raise DataMismatch(f"{where} has {found.get('input_dim')} features, the network takes {recorded.get('input_dim')}")
    target, rec_target = _as_list(found.get("target")), _as_list(recorded.get("target"))
    if target is not None and rec_target is not None and target != rec_target:
        fix = rec_target[0] if len(rec_target) == 1 else "[" + ",".join(rec_target) + "]"
        raise DataMismatch(f"{where}: the target is {_quoted(target)}, the network predicts {_quoted(rec_target)}; "
                           f"set data.target={fix}")
    out, rec_out = found.get("output_dim"), recorded.get("output_dim")
    if rec_task == "classification":
        classes, rec_classes = _as_list(found.get("classes")), _as_list(recorded.get("classes"))
        if out != rec_out:
            raise DataMismatch(f"{where} has {out} classes ({_names(classes or [])}), the network {rec_out} "
                               f"({_names(rec_classes or [])}); give data with the network's classes")
        if classes is not None and rec_classes is not None and classes != rec_classes:
            raise DataMismatch(f"{where} has other class names ({_names(classes)}) than the network ({_names(rec_classes)}); "
                               "give data with the network's classes")
    elif rec_out is not None and out != rec_out:
        raise DataMismatch(f"{where} has {out} target column{'s' * (out != 1)}, the network predicts {rec_out}")
