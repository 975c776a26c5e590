"""The steps of wsss, one entry each: the command line, the Prefect flows, the benchmarks and the
tests call these functions and nothing below them. Each takes the typed ``Config`` (and what the
call itself decides: a checkpoint, a split, an output folder) and hands each lower function only
the sections it reads. Nothing here imports Prefect.

    step                 entry                                              module
    init (settings)      derive_settings(survey, model, run_dir, template)  recipe
                         (choose_model, demo_template, apply_derived, recipe_yaml)
    train classifier     train_classifier(config, control)                  classifier_step
      quality gate       check_classifier(config, checkpoint)               classifier_step
    cam                  write_maps(config, checkpoint, split, out, ...)    maps_step
    saliency             write_saliency(config, checkpoint, split, out, ..) maps_step
    pseudo-label         pseudo_label(config, checkpoint, split, out, ...)  labels_step
                         (the flows: open_labels / label_ids / finish_labels, one shard at a time)
    self-training        round1_config, train_round1_segmenter,             self_training_saliency
                         write_round1_saliency
    train segmenter      train_segmenter(config, control, init)             segmenter_step
      its score          score_segmenter(config, checkpoint)                segmenter_step
    predict              predict_images(config, checkpoint, images, out)    predict_step
    evaluate             evaluate_folder(config, pred, split, json_path)    evaluate_step
    report               report(config, checkpoint, split, out, ...)        report_step
                         (the pipeline: pipeline_report(config, checkpoint, methods, results))
    export               export_labels(config, labels, split, out, ...)     export_step

Helpers of the steps: ``provenance`` (what made an output folder: source.json), ``label_plan``
(what is finished on disk, shards), ``image_claims`` (one writer per image: OUT/.claims, taken
over from a holder that is gone), ``worker_cache`` (a classifier loaded once per worker),
``inbox_scan`` (the watched folder of the label-inbox flow), ``run_record`` (RUN/config.yaml).
"""
