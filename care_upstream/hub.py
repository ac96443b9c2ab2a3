"""Weights named by a local path or by a Hugging Face Hub repo id (``org/name``, optional ``@revision``).

One resolver for `-k`, `CARE.from_pretrained` and `EmotionClassifier.from_pretrained`, so that every
entry point caches the same way and honours ``HF_HUB_OFFLINE=1`` the same way. Only data files
are fetched (config JSON, safetensors, the model card): nothing downloaded is ever imported or
unpickled, which is why a repo holding only a ``.bin`` or ``.py`` yields a folder without weights
and the loader then says so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Tuple

__all__ = ["ALLOW_PATTERNS", "HubError", "is_repo_id", "resolve", "split_revision"]

ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.md")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubError(FileNotFoundError):
    """A Hub id that cannot be turned into a local folder (not cached offline, unknown repo or revision)."""


def split_revision(text: str) -> Tuple[str, Optional[str]]:
    """``org/name@rev`` → (``org/name``, ``rev``); no ``@`` → (text, None)."""
    repo, at, rev = text.partition("@")
    return repo, (rev or None) if at else None


def is_repo_id(text: str) -> bool:
    """True for ``org/name`` or ``org/name@rev`` that is not spelled like a filesystem path."""
    if text.startswith((".", "/", "~")) or text.endswith("/") or "\\" in text:
        return False
    return _REPO_ID.fullmatch(split_revision(text)[0]) is not None


def _offline() -> bool:
    # Read at call time, not at import (huggingface_hub.constants freezes it on import).
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def _cache_dir() -> Optional[str]:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's own default (~/.cache/huggingface/hub)


def resolve(path_or_repo_id: str, revision: Optional[str] = None) -> Path:
    """An existing local path as is; otherwise a Hub repo id, through huggingface_hub's cache.

    Returns the local folder (a cache snapshot for a Hub id). Raises `FileNotFoundError` for a
    missing path that is not a repo id, and `HubError` (a FileNotFoundError) with one sentence
    when the repo cannot be had: not cached while offline, unknown repo or revision, no network.
    """
    text = str(path_or_repo_id)
    local = Path(text).expanduser()
    if local.exists():
        return local
    if not is_repo_id(text):
        raise FileNotFoundError(f"{text}: no such file or folder (and not a Hugging Face Hub id like org/name)")
    repo_id, rev_in_id = split_revision(text)
    revision = revision or rev_in_id
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    offline = _offline()
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=_cache_dir(), local_files_only=offline,
                                   allow_patterns=list(ALLOW_PATTERNS))
    except LocalEntryNotFoundError:
        if offline:
            raise HubError(f"{where} is not a local path and is not in the Hugging Face cache "
                           f"({_cache_dir() or '~/.cache/huggingface/hub'}), and HF_HUB_OFFLINE=1 forbids "
                           f"downloading it: download it once online, or pass a local folder") from None
        raise HubError(f"{where}: cannot reach the Hugging Face Hub and the repo is not cached; "
                       f"check the network, or pass a local folder") from None
    except RevisionNotFoundError:
        raise HubError(f"{where}: the Hugging Face Hub repo has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise HubError(f"{where}: no such Hugging Face Hub repo (or it is private and no token is set)") from None
    except (EntryNotFoundError, HfHubHTTPError) as e:
        raise HubError(f"{where}: Hugging Face Hub error: {str(e).splitlines()[0]}") from None
    return Path(folder)
