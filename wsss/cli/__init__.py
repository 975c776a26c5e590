"""The ``wsss`` command line: a thin layer over the steps (``wsss.steps``) and the flows.

    wsss init DATASET [--model NAME] [--weights PATH] [--out F]  write settings derived from a data set
    wsss data synth  [--out DIR] [--config F] [--set K=V ...]   write the demo data set
    wsss data check  DATASET [--split S] [--strict]             read everything, report, exit 1 on errors
                     [--format coco --annotations F]           (every --dataset takes these too)
    wsss config show [--config F] [--set K=V ...]               print the effective config as YAML
    wsss weights inspect PATH [--model NAME] [--set K=V ...]    layout of pretrained weights; exit 1 if they do not fit
    wsss train classifier [--config F] [--set K=V ...] [--restart]  train the ViT from tags
    wsss train segmenter  [--config F] [--set K=V ...] [--restart]  the segmenter (train.segmenter.head), single or two stage
    wsss predict --checkpoint F --images DIR --out DIR         segmenter → palette PNGs
    wsss cam --checkpoint F [--dataset D] --out DIR [--method M]  maps + overlays for every image
    wsss evaluate --pred DIR [--dataset D] [--split S] [--json F] score labels or raw maps
    wsss export LABELS [--dataset D] --out F.json [--per region|class]  label PNGs → COCO instances JSON
    wsss pseudo-label --checkpoint F [--dataset D] --out DIR   the whole chain → label PNGs
    wsss report --checkpoint F [--dataset D] --out DIR         stage table + report.html
    wsss saliency --checkpoint F [--dataset D] --out DIR       built-in TokenCut saliency maps
    wsss demo        [--out DIR]                                the pipeline flow on the demo data (configs/demo.yaml)
    wsss flow run NAME [--param K=V ...]                        run one Prefect flow once (pipeline, pseudo-labels, ...)
    wsss flow serve  [--start-server] [--port 4200]             serve label-inbox on its schedule

Every command that reads settings takes ``--config FILE`` and ``--set key.path=value``; a data set
given with ``--dataset`` (``--format``, ``--annotations``) takes the place of the config's
``data.root`` and format, and every other ``data`` setting still applies (without ``--dataset``:
the config's data set). A bad setting, data set, checkpoint or input prints ``error: ...``
naming it and exits with status 2; a walk that failed some images exits with 1, a full disk
with 3 (``wsss.lifetime.DISK_FULL``), Ctrl-C with 130.

Modules: ``arguments`` (what every command shares), ``parser``, and one module per group of
commands: ``init_command``, ``data_commands``, ``train_commands``, ``label_commands``, ``score_commands``,
``flow_commands``.
"""

from __future__ import annotations

import sys

__all__ = ["main", "run"]


def main(argv: list[str] | None = None) -> int:
    from wsss.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:  # ConfigError, DatasetError, PretrainedWeightsError, ...
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as error:  # e.g. a read-only output folder
        print(f"error: cannot write or read {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    except OSError as error:
        from wsss.files import DISK_FULL_ERRNOS
        from wsss.lifetime import DISK_FULL

        if error.errno not in DISK_FULL_ERRNOS:
            raise
        where = error.filename or getattr(args, "out", None) or getattr(args, "json", None)
        print(f"error: the disk is full ({error.strerror or error}{f' writing {where}' if where else ''}): nothing "
              "finished is lost (every output is written whole or not at all); free some space and run the same "
              "command again to finish the rest", file=sys.stderr)
        return DISK_FULL
    except KeyboardInterrupt:
        from wsss.lifetime import INTERRUPTED

        print("\ninterrupted: finished outputs are kept, the same command finishes the rest", file=sys.stderr)
        return INTERRUPTED


def run() -> None:
    """The ``wsss`` command (and ``python -m wsss``): :func:`main` on the command line, with Ctrl-C
    that stops within seconds (``wsss.lifetime.stop_soon_after_interrupt``) and freed memory kept
    for reuse (``wsss.allocator.keep_freed_memory``)."""
    from wsss.allocator import keep_freed_memory
    from wsss.lifetime import stop_soon_after_interrupt

    stop_soon_after_interrupt()
    keep_freed_memory()
    sys.exit(main(sys.argv[1:]))
