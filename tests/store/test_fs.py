"""Network and FUSE filesystems are refused at open (pure functions over /proc/mounts)."""

from __future__ import annotations

import pytest

from mpqueue.errors import ConfigError
from mpqueue.store.lmdb.env import is_network_fs, mount_fs_type, refuse_network_fs

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
tmpfs /tmp tmpfs rw 0 0
server:/export /mnt/nfs nfs rw,vers=3 0 0
server:/export4 /mnt/nfs4 nfs4 rw 0 0
//host/share /mnt/smb cifs rw 0 0
me@host:/ /home/me/remote fuse.sshfs rw 0 0
/dev/sdb1 /mnt/nfs/local ext4 rw 0 0
/dev/sdc1 /mnt/with\\040space xfs rw 0 0
/dev/sdd1 /data ext4 rw 0 0
"""


@pytest.mark.parametrize(
    "path,fs_type",
    [
        ("/", "ext4"),
        ("/var/lib/q", "ext4"),
        ("/tmp/q", "tmpfs"),
        ("/mnt/nfs", "nfs"),
        ("/mnt/nfs/q", "nfs"),
        ("/mnt/nfs4/a/b", "nfs4"),
        ("/mnt/smb/q", "cifs"),
        ("/home/me/remote/q", "fuse.sshfs"),
        ("/mnt/nfs/local/q", "ext4"),
        ("/mnt/nfsx/q", "ext4"),
        ("/mnt/with space/q", "xfs"),
        ("/datastore", "ext4"),
        ("/data/q", "ext4"),
    ],
)
def test_mount_fs_type_takes_the_longest_mount_point(path, fs_type):
    assert mount_fs_type(path, MOUNTS) == fs_type


@pytest.mark.parametrize("path", ["/mnt/nfs/q", "/mnt/nfs4/q", "/mnt/smb/q", "/home/me/remote/q"])
def test_network_and_fuse_are_refused(path):
    with pytest.raises(ConfigError) as info:
        refuse_network_fs(path, MOUNTS)
    assert "filesystem" in str(info.value)


@pytest.mark.parametrize("path", ["/data/q", "/tmp/q", "/mnt/nfs/local/q", "/"])
def test_local_filesystems_are_accepted(path):
    refuse_network_fs(path, MOUNTS)


def test_fs_type_classification():
    for fs in ("nfs", "cifs", "fuse.sshfs", "fuse", "fuseblk", "smb3", "9p", "ceph"):
        assert is_network_fs(fs), fs
    for fs in ("ext4", "xfs", "btrfs", "tmpfs", "zfs", ""):
        assert not is_network_fs(fs), fs


def test_unparseable_lines_are_skipped():
    assert mount_fs_type("/x", "garbage\n\n/dev/a / ext4 rw 0 0\nshort line\n") == "ext4"
    assert mount_fs_type("/x", "") == ""
