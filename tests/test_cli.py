"""The command line on hostile and careless input: sizes are checked before anything is decoded (proved
under a memory cap), every failure is one line, and no output may destroy an input."""
import errno
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lic_utils import bitstream, cli, data, models
from lic_utils.files import REPO  # subprocesses run this checkout's code

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny untrained checkpoint, small images, and small files that claim huge images."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = models.build_model({"N": 8, "M": 12})
    model.update(force=True)
    models.save_checkpoint(d / "c.pt", model)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(d / "small.png")
    Image.new("RGB", (1536, 1536), (30, 60, 90)).save(d / "flat.png")  # within the limit, 9 MB decoded
    Image.new("1", (12000, 12000), 1).save(d / "huge.png")  # 144 Mpx in 41 KB: 432 MB once RGB
    Image.new("1", (4100, 4100), 1).save(d / "over.png")  # just over MAX_PIXELS, under Pillow's limit
    (d / "over.lic").write_bytes(lic_claiming(model, 8192, 8192))
    return d


def lic_claiming(model, height: int, width: int) -> bytes:
    """A .lic file of `model` with valid CRCs whose header claims an image of height × width."""
    hashes = bytes.fromhex(model.config.config_hash()), bytes.fromhex(model.fingerprint())
    header = bitstream._FIXED.pack(bitstream.MAGIC, bitstream.FORMAT_VERSION, 1, *hashes,
                                   height, width, bytes(4)) + struct.pack("<I", 8)
    payload = bytes(8)
    return (header + struct.pack("<I", zlib.crc32(header)) + payload
            + struct.pack("<I", zlib.crc32(payload)))


# Runs commands in a fresh process, each under its limits: address space beyond what the imports took
# (MB), file size (bytes). A command that lets an exception escape cli.main fails the whole script.
LIMITED = """
import contextlib, io, json, re, resource, sys
import lpips, pytorch_msssim  # everything a command imports, before the cap
from lic_utils import bitstream, cli, codecs, data, metrics, models
NONE = resource.RLIM_INFINITY
results = []
for extra_mb, fsize, argv in json.loads(sys.argv[1]):
    vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) << 10
    resource.setrlimit(resource.RLIMIT_AS, (vm + (extra_mb << 20) if extra_mb else NONE, NONE))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize or NONE, NONE))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(argv)
    resource.setrlimit(resource.RLIMIT_AS, (NONE, NONE))
    resource.setrlimit(resource.RLIMIT_FSIZE, (NONE, NONE))
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def run_limited(cases) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cases = [[mb, fsize, [str(a) for a in argv]] for mb, fsize, argv in cases]
    proc = subprocess.run([sys.executable, "-c", LIMITED, json.dumps(cases)], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_sizes_are_checked_before_decoding_under_a_memory_cap(files):
    """Every refusal below happens with 300 MB of address space to spare: decoding any of these files
    first (432 MB for the 12000² image alone, GBs for the metrics) would fail on memory instead."""
    d, ckpt = files, files / "c.pt"
    cases = [
        (["compress", d / "huge.png", d / "a.lic", "--checkpoint", ckpt], "more than 16777216 pixels"),
        (["compress", d / "over.png", d / "a.lic", "--checkpoint", ckpt], "= 16810000 pixels, more"),
        (["metrics", d / "huge.png", d / "huge.png"], "more than 16777216 pixels"),
        (["metrics", d / "small.png", d / "over.png"], "more than the limit of 16777216"),
        (["baseline", d / "over.png", "--codec", "jpeg", "--quality", "50", "-o", d / "a.jpg"],
         "more than the limit of 16777216"),
        (["decompress", d / "over.lic", d / "a.png", "--checkpoint", ckpt], "8192×8192 pixels"),
        (["info", d / "over.lic"], "at most 16777216 pixels"),
    ]
    works = ["compress", d / "small.png", d / "ok.lic", "--checkpoint", ckpt]  # the cap leaves room
    results = run_limited([(300, None, argv) for argv, _ in cases] + [(300, None, works)])
    for (argv, message), (code, err) in zip(cases, results):
        assert code == 1 and one_line(err, message), (argv, err)
    assert results[-1] == [0, ""]
    assert not any((d / f).exists() for f in ("a.lic", "a.png", "a.jpg"))


def test_out_of_memory_and_a_full_file_size_limit_are_one_line(files):
    d, ckpt = files, files / "c.pt"
    results = run_limited([
        (100, None, ["metrics", d / "flat.png", d / "flat.png"]),  # MS-SSIM and LPIPS need far more
        (None, 200, ["compress", d / "small.png", d / "big.lic", "--checkpoint", ckpt]),
    ])
    (code, err), (code2, err2) = results
    assert code == 1 and err == "error: out of memory: use a smaller image, or free memory and retry\n"
    assert code2 == 1 and err2.count("\n") == 1 and "file-size limit (ulimit -f)" in err2, err2
    assert f"cannot write {d / 'big.lic'}" in err2 and not list(d.glob(".big.lic.*"))


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, message: str) -> bool:
    return err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_no_output_may_destroy_an_input(files, tmp_path, capsys):
    ckpt, t = ["--checkpoint", files / "c.pt"], tmp_path
    src = t / "a.png"
    src.write_bytes((files / "small.png").read_bytes())
    (t / "link.lic").symlink_to(src)
    (t / "notes.txt").write_text("keep me")
    (t / "notes.png").write_text("keep me")
    assert run_cli(capsys, "compress", src, t / "a.lic", *ckpt)[0] == 0
    lic = (t / "a.lic").read_bytes()
    (t / "b.jpg").write_bytes(b"\xff\xd8 not really")
    cases = [
        (["compress", src, src, *ckpt], "over the input"),
        (["compress", src, t / "link.lic", *ckpt], "over the input"),
        (["compress", src, t / "notes.txt", *ckpt], "is not a .lic file"),
        (["decompress", t / "a.lic", t / "a.lic", *ckpt], "over the input"),
        (["decompress", t / "a.lic", t / "notes.txt", *ckpt], "unknown image extension .txt"),
        (["decompress", t / "a.lic", t / "notes.png", *ckpt], "is not a PNG file"),
        (["baseline", t / "b.jpg", "--codec", "jpeg", "--quality", "9", "-o", t / "b.jpg"], "over the"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 1 and one_line(err, message), (argv, err)
    assert src.read_bytes() == (files / "small.png").read_bytes() and (t / "link.lic").is_symlink()
    assert (t / "notes.txt").read_text() == "keep me" and (t / "a.lic").read_bytes() == lic
    # outputs of the right kind may be replaced
    assert run_cli(capsys, "compress", src, t / "a.lic", *ckpt)[0] == 0
    assert run_cli(capsys, "decompress", t / "a.lic", t / "a.out.png", *ckpt)[0] == 0
    assert run_cli(capsys, "decompress", t / "a.lic", t / "a.out.png", *ckpt)[0] == 0


def test_write_failures_are_one_line_naming_the_path_and_the_fix(files, tmp_path, capsys, monkeypatch):
    ckpt, src = files / "c.pt", files / "small.png"
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    cases = [
        (tmp_path / "file" / "a.lic", "a parent of it is a file, not a folder"),
        (tmp_path / "file" / "sub" / "a.lic", "a parent of it is a file, not a folder"),
        (tmp_path / "folder", "it is a folder: name a file"),
    ]
    for out, message in cases:
        code, _, err = run_cli(capsys, "compress", src, out, "--checkpoint", ckpt)
        assert code == 1 and one_line(err, message) and str(out) in err, err
    code, _, err = run_cli(capsys, "decompress", files / "over.lic", tmp_path / "folder", "--checkpoint",
                           ckpt)
    assert code == 1 and one_line(err, "it is a folder")

    def refused(*args, **kwargs):  # what a folder without write permission gives (tests may run as root)
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr("tempfile.mkstemp", refused)
    code, _, err = run_cli(capsys, "compress", src, tmp_path / "a.lic", "--checkpoint", ckpt)
    assert code == 1 and err == (f"error: cannot write {tmp_path / 'a.lic'}: permission denied: "
                                 "choose a folder you may write to\n")


def test_failures_no_command_foresaw_are_still_one_line(files, tmp_path, capsys, monkeypatch):
    ckpt, src = files / "c.pt", files / "small.png"
    raised = []

    def load_rgb(path, **options):
        raise raised[-1]

    monkeypatch.setattr(data, "load_rgb", load_rgb)
    for exc, message in [
        (MemoryError(), "error: out of memory: use a smaller image, or free memory and retry\n"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                      "you tried to allocate 1769472000 bytes."), "error: out of memory"),
        (OSError(errno.EIO, "Input/output error", "disk.png"), "error: disk.png: Input/output error;"),
    ]:
        raised.append(exc)
        code, out, err = run_cli(capsys, "compress", src, tmp_path / "a.lic", "--checkpoint", ckpt)
        assert code == 1 and out == "" and err.startswith(message) and err.count("\n") == 1, err
    raised.append(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):  # a bug is not dressed up as a user error
        cli.main(["compress", str(src), str(tmp_path / "a.lic"), "--checkpoint", str(ckpt)])


def test_coder_tables_that_would_crash_the_native_coder_are_refused(files, tmp_path):
    """Zeroed CDFs with a recomputed fingerprint made `compress` die of SIGFPE (a division by a zero
    frequency inside CompressAI's rANS coder): the checkpoint is now refused on load."""
    ckpt = torch.load(files / "c.pt", weights_only=True)
    sd = ckpt["state_dict"]
    sd["prior.entropy_bottleneck._quantized_cdf"][0].zero_()
    model = models.build_model(ckpt["config"])
    model.load_state_dict(sd)
    ckpt["fingerprint"] = model.fingerprint()
    torch.save(ckpt, tmp_path / "zeroed.pt")
    proc = subprocess.run([sys.executable, "-m", "lic_utils", "compress", str(files / "small.png"),
                           str(tmp_path / "a.lic"), "--checkpoint", str(tmp_path / "zeroed.pt")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert one_line(proc.stderr, f"error: {tmp_path / 'zeroed.pt'} is corrupted: the rANS tables of "
                                 "prior.entropy_bottleneck have a CDF row")


def test_decompress_into_a_pipe_and_a_reader_that_leaves(files, tmp_path):
    """`decompress f.lic /dev/stdout | …` gives the PNG on the pipe (nothing else on it), and a reader
    that stops early (`| head -c 8`) ends the command quietly, as it ends cat. (/proc/self/fd/1 is
    where /dev/stdout leads; named so that a regression cannot rename a file over the system's
    /dev/stdout: test_files checks that a FIFO is written into, not replaced.)"""
    stdout = "/proc/self/fd/1"
    lic = tmp_path / "small.lic"
    run = lambda *argv, **kw: subprocess.run([sys.executable, "-m", "lic_utils", *map(str, argv)], cwd=REPO,  # noqa: E731
                                             env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)
    assert run("compress", files / "small.png", lic, "--checkpoint", files / "c.pt", capture_output=True).returncode == 0
    whole = run("decompress", lic, stdout, "--checkpoint", files / "c.pt", capture_output=True)
    assert whole.returncode == 0 and whole.stdout.startswith(b"\x89PNG") and whole.stderr == b""
    assert Image.open(__import__("io").BytesIO(whole.stdout)).size == (96, 64)
    shell = f"{sys.executable} -m lic_utils decompress {lic} {stdout} --checkpoint {files / 'c.pt'} | head -c 8"
    cut = subprocess.run(["bash", "-c", shell + "; echo \" ${PIPESTATUS[0]}\""], cwd=REPO, capture_output=True)
    assert cut.stdout.startswith(b"\x89PNG\r\n\x1a\n") and cut.stdout.split()[-1] in (b"0", b"141")
    assert b"error" not in cut.stderr and b"Traceback" not in cut.stderr


@pytest.mark.parametrize("argv, message", [
    (["train", "--profile", "smoke", "--device", "banana"], "unknown device 'banana': use auto, cpu"),
    (["train", "--profile", "smoke", "--device", "cuda"], "device 'cuda' is not available on this machine"),
])
def test_a_device_that_is_not_there_is_one_line(argv, message, tmp_path, capsys):
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 1  # the tests see no GPU (conftest)
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--threads", "--repeats"])
def test_bench_refuses_zero_threads_or_repeats_in_one_line(flag, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", flag, "0", "--images", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}: must be a whole number of at least 1, got 0" in err
    assert "Traceback" not in err


def test_a_p3_photo_round_trips_as_a_colour_managed_viewer_shows_it(files, tmp_path, capsys):
    """compress converts the profile to sRGB and says so; the file is the one the sRGB conversion
    gives; the decoded PNG is tagged sRGB; metrics compares what a viewer shows (both converted)."""
    from test_data import as_viewer_shows, p3_photo

    ckpt = ["--checkpoint", files / "c.pt"]
    p3, _ = p3_photo(tmp_path)
    Image.fromarray(as_viewer_shows(p3)).save(tmp_path / "srgb.png")
    code, _, err = run_cli(capsys, "compress", p3, tmp_path / "p3.lic", *ckpt)
    assert code == 0 and err == f"note: {p3}: converted from its colour profile (Display P3 (test)) to sRGB\n"
    assert run_cli(capsys, "compress", tmp_path / "srgb.png", tmp_path / "srgb.lic", *ckpt) == (0, ANY_OUT, "")
    assert (tmp_path / "p3.lic").read_bytes() == (tmp_path / "srgb.lic").read_bytes()
    assert run_cli(capsys, "decompress", tmp_path / "p3.lic", tmp_path / "out.png", *ckpt)[0] == 0
    assert Image.open(tmp_path / "out.png").info.get("srgb") == 0  # tagged sRGB
    scores = [json.loads(run_cli(capsys, "metrics", ref, tmp_path / "p3.lic", *ckpt)[1]) for ref in (p3, tmp_path / "srgb.png")]
    assert scores[0] == scores[1]


class _Any(str):
    def __eq__(self, other):
        return True


ANY_OUT = _Any()


def test_transparency_and_animations_are_refused_in_one_line_naming_the_flag(files, tmp_path, capsys):
    from test_data import transparent_images

    ckpt = ["--checkpoint", files / "c.pt"]
    rgba = np.array(Image.open(files / "small.png").convert("RGBA"))
    rgba[:, :48, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "half.png")
    for path in [tmp_path / "half.png", *transparent_images(tmp_path)]:
        code, _, err = run_cli(capsys, "compress", path, tmp_path / "a.lic", *ckpt)
        assert code == 1 and one_line(err, "has transparency") and "--background COLOR" in err, err
        assert not (tmp_path / "a.lic").exists()
    assert run_cli(capsys, "compress", tmp_path / "half.png", tmp_path / "a.lic", *ckpt, "--background", "white")[0] == 0
    white = rgba.copy()
    white[:, :48, :3] = 255
    Image.fromarray(white[..., :3]).save(tmp_path / "white.png")
    assert run_cli(capsys, "compress", tmp_path / "white.png", tmp_path / "w.lic", *ckpt)[0] == 0
    assert (tmp_path / "a.lic").read_bytes() == (tmp_path / "w.lic").read_bytes()
    code, _, err = run_cli(capsys, "metrics", tmp_path / "half.png", tmp_path / "a.lic", *ckpt)
    assert code == 1 and one_line(err, "--background")
    frames = [Image.open(files / "small.png"), Image.new("RGB", (96, 64))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    code, _, err = run_cli(capsys, "compress", tmp_path / "anim.gif", tmp_path / "g.lic", *ckpt)
    assert code == 1 and one_line(err, "is an animation of 2 frames") and "--first-frame" in err
    assert run_cli(capsys, "compress", tmp_path / "anim.gif", tmp_path / "g.lic", *ckpt, "--first-frame")[0] == 0


def test_decompress_writes_the_lossless_format_its_extension_names_and_refuses_lossy_ones(files, tmp_path, capsys):
    ckpt = ["--checkpoint", files / "c.pt"]
    assert run_cli(capsys, "compress", files / "small.png", tmp_path / "a.lic", *ckpt)[0] == 0
    assert run_cli(capsys, "decompress", tmp_path / "a.lic", tmp_path / "a.png", *ckpt)[0] == 0
    png = np.array(Image.open(tmp_path / "a.png"))
    for name, fmt in [("a.tif", "TIFF"), ("a.webp", "WEBP"), ("a.bmp", "BMP"), ("a.ppm", "PPM")]:
        assert run_cli(capsys, "decompress", tmp_path / "a.lic", tmp_path / name, *ckpt)[0] == 0
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt and np.array_equal(np.array(im.convert("RGB")), png), name
    for name in ("a.jpg", "a.avif"):
        code, _, err = run_cli(capsys, "decompress", tmp_path / "a.lic", tmp_path / name, *ckpt)
        assert code == 1 and one_line(err, "lossy") and "write a.png" in err and not (tmp_path / name).exists()
    (tmp_path / "old.tif").write_bytes(b"not a tiff")
    code, _, err = run_cli(capsys, "decompress", tmp_path / "a.lic", tmp_path / "old.tif", *ckpt)
    assert code == 1 and one_line(err, "is not a TIFF file")


def test_a_dash_is_stdin_and_stdout(files, tmp_path):
    """`compress - - < in.png > out.lic` and `decompress - - < out.lic > out.png`, as other codecs do;
    the summary goes to stderr when stdout holds the file."""
    ckpt = ["--checkpoint", str(files / "c.pt")]
    run = lambda *argv, **kw: subprocess.run([sys.executable, "-m", "lic_utils", *map(str, argv), *ckpt], cwd=REPO,  # noqa: E731
                                             env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, **kw)
    assert run("compress", files / "small.png", tmp_path / "a.lic").returncode == 0
    piped = run("compress", "-", "-", input=(files / "small.png").read_bytes())
    assert piped.returncode == 0 and piped.stdout == (tmp_path / "a.lic").read_bytes()
    assert json.loads(piped.stderr)["bytes"] == len(piped.stdout)
    assert run("decompress", tmp_path / "a.lic", tmp_path / "a.png").returncode == 0
    out = run("decompress", "-", "-", input=piped.stdout)
    assert out.returncode == 0 and out.stderr == b""
    assert np.array_equal(np.array(Image.open(__import__("io").BytesIO(out.stdout))), np.array(Image.open(tmp_path / "a.png")))


def test_a_summary_that_cannot_be_written_says_it_was_stdout_and_that_the_file_was_written(files, tmp_path):
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "lic_utils", "compress", str(files / "small.png"),
                               str(tmp_path / "a.lic"), "--checkpoint", str(files / "c.pt")], cwd=REPO,
                              stdout=full, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and proc.stderr == (f"error: cannot write the summary to stdout: No space left on "
                                                    f"device ({tmp_path / 'a.lic'} was written)\n")
    assert bitstream.parse((tmp_path / "a.lic").read_bytes())
