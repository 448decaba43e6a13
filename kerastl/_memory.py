"""How much memory this process may still take (Linux), for choices that trade memory for speed.

`available_bytes()` is the smaller of the machine's `MemAvailable` and, where the
process runs in a memory cgroup with a limit (a container, a batch job, a
`systemd` slice), that limit less what the cgroup holds, counting its inactive
page cache as free (the kernel reclaims it before it kills). `None` where this
cannot be read (not Linux): callers then take the choice that needs no memory.
"""

import os

_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge number


def available_bytes():
    """Bytes this process may still allocate, or `None` where that cannot be read."""
    machine = _meminfo_available()
    if machine is None:
        return None
    group = _cgroup_headroom()
    return machine if group is None else min(machine, group)


def _meminfo_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom():
    """The memory cgroup's limit less what it holds (inactive page cache counted free).

    The tightest over the process's cgroup and the groups above it (a parent's limit
    binds its children: v1 reports it as `hierarchical_memory_limit`, v2 in the
    parent's own files); `None` where no group has a limit.
    """
    rooms = [
        _headroom(group, names)
        for directory, root, names in _cgroup_directories()
        for group in _up_to(directory, root)
    ]
    rooms = [room for room in rooms if room is not None]
    return min(rooms) if rooms else None


def _up_to(directory, root):
    """`directory`, then each directory above it, down to `root` included."""
    directory, root = os.path.normpath(directory), os.path.normpath(root)
    while directory.startswith(root):
        yield directory
        if directory == root:
            return
        directory = os.path.dirname(directory)


def _headroom(directory, names):
    """One group's limit less its usage plus inactive page cache, or `None` (no limit)."""
    limit = _read_number(os.path.join(directory, names[0]))
    usage = _read_number(os.path.join(directory, names[1]))
    if limit is None or usage is None:
        return None
    stats = _stats(os.path.join(directory, "memory.stat"))
    limit = min(limit, stats.get("hierarchical_memory_limit") or limit)
    if limit >= _UNLIMITED:
        return None
    return max(limit - usage + stats.get(names[2], 0), 0)


def _cgroup_directories():
    """`(directory, its hierarchy's root, (limit, usage, inactive-cache key))` of this
    process's memory cgroup, for each hierarchy that has one (v1 and v2)."""
    v1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    v2 = ("memory.max", "memory.current", "inactive_file")
    found = []
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if "memory" in controllers.split(","):
            root = "/sys/fs/cgroup/memory"
            found.append((os.path.join(root, path.lstrip("/")), root, v1))
        elif hierarchy == "0" and not controllers:
            root = "/sys/fs/cgroup"
            found.append((os.path.join(root, path.lstrip("/")), root, v2))
    return found


def _read_number(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return _UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _stats(path):
    """A `memory.stat` file as `{name: number}` (empty where it cannot be read)."""
    stats = {}
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                try:
                    stats[name] = int(value)
                except ValueError:
                    continue
    except OSError:
        pass
    return stats
