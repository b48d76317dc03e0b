# One image recipe for both Lambda functions (the model, its runtime and OpenCV do not fit a zip function).
# Build context: the repository root. The final stage is picked with a build *target*, not a build arg,
# because CMD cannot expand variables and the Lambda entrypoint needs the handler as its argument:
#   docker build --target extract -t imgsearch-extract .     # CMD app.handler
#   docker build --target search  -t imgsearch-search .      # CMD app.app (Chalice)
# (template.yaml passes DockerBuildTarget; infra/docker-compose.yml passes build.target.)
#
# The functions run VGG19 as an int8 OpenVINO model (no TensorFlow in the final images: smaller, and a cold
# start skips TensorFlow's import). The `int8-model` stage builds it from the weights file, calibrated on a few
# dozen photos like the ones you will index (models/calibration/, any image files). Neither is committed
# (models/ and *.h5 are git-ignored). Put the weights at
# models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 and the photos under models/calibration/ first, e.g.:
#   mkdir -p models/calibration && cp ~/Pictures/some-of-yours/*.jpg models/calibration/
#   mkdir -p models && cp ../shared/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 models/
#   mkdir -p models && curl -fLo models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 \
#     https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5
# or point the build arg WEIGHTS_FILE at another path inside the build context.
#
# The base image is pinned to one release of AWS's Python 3.12 Lambda image (tags are
# 3.12.<date>.<build>; a plain 3.12 moves every week). For a reproducible build, pin its digest too, once
# with network access, and keep both:
#   docker buildx imagetools inspect public.ecr.aws/lambda/python:3.12.2025.04.01.18 --format '{{.Manifest.Digest}}'
#   docker build --build-arg LAMBDA_BASE=public.ecr.aws/lambda/python:3.12.2025.04.01.18@sha256:<digest> ...
# (or write the @sha256 into the ARG below). To move to a newer release, change the date and the digest.
#
# Users: on AWS, Lambda ignores the image's USER and runs the function as its own unprivileged user, so the
# images need nothing for Lambda. Run anywhere else (infra/docker-compose.yml, `docker run`), the final images
# run as UID/GID 1000 (USER below; compose also says `user:`): everything they write goes to /tmp or to
# /var/lib/imgsearch, which belongs to that user.
ARG LAMBDA_BASE=public.ecr.aws/lambda/python:3.12.2025.04.01.18

# Build stage: TensorFlow + NNCF turn the weights into the int8 model; none of it reaches the final images.
# Its third-party packages come from infra/requirements/build-model.lock (extras model and build), as the final
# images' do from image.lock: see below.
FROM ${LAMBDA_BASE} AS int8-model
COPY infra/requirements/build-model.lock /tmp/requirements/build-model.lock
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements/build-model.lock \
    && rm -rf /tmp/requirements
COPY layers/imgsearch /tmp/imgsearch
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/imgsearch && rm -rf /tmp/imgsearch
ARG WEIGHTS_FILE=models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5
ARG CALIBRATION_DIR=models/calibration
COPY ${WEIGHTS_FILE} /tmp/weights.h5
COPY ${CALIBRATION_DIR} /tmp/calibration
RUN IMGSEARCH_VGG19_WEIGHTS=/tmp/weights.h5 TF_CPP_MIN_LOG_LEVEL=2 \
    imgsearch build-model --out /opt/models/vgg19-int8.xml /tmp/calibration


FROM ${LAMBDA_BASE} AS base

# Third-party dependencies first, from the lock alone, so editing the library's code does not re-download
# them: infra/requirements/image.lock pins, with their hashes, everything the core (extras int8 and serve),
# the functions' requirements.txt and the core's build backend need, for this base image's platform.
# `infra/lock` writes it; `infra/lint` checks that it is current and audits it.
COPY infra/requirements/image.lock /tmp/requirements/image.lock
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements/image.lock \
    && rm -rf /tmp/requirements

# The core library itself (installed, not editable: the image has no checkout), without its dependencies and
# with the locked setuptools (no build isolation, so nothing unpinned is fetched).
COPY layers/imgsearch /tmp/imgsearch
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/imgsearch && rm -rf /tmp/imgsearch

COPY --from=int8-model /opt/models/ /opt/models/
# IMGSEARCH_DATA_DIR: Lambda can write only under /tmp. IMGSEARCH_FUNCTIONS_DIR: where the `imgsearch` CLI
# (worker, webhook and serve in infra/docker-compose.yml) finds functions/<name>/app.py.
ENV IMGSEARCH_PRECISION=int8 \
    IMGSEARCH_INT8_MODEL=/opt/models/vgg19-int8.xml \
    IMGSEARCH_DATA_DIR=/tmp/imgsearch \
    IMGSEARCH_FUNCTIONS_DIR=/opt/imgsearch/functions

# The functions' own dependencies (functions/*/requirements.txt) are in image.lock, installed above.
COPY functions /opt/imgsearch/functions
# A data folder for the non-root user (a named volume mounted here starts with this owner).
RUN mkdir -p /var/lib/imgsearch && chown 1000:1000 /var/lib/imgsearch


FROM base AS extract
COPY functions/extract/ ${LAMBDA_TASK_ROOT}/
USER 1000:1000
CMD ["app.handler"]


FROM base AS search
COPY functions/search/ ${LAMBDA_TASK_ROOT}/
USER 1000:1000
CMD ["app.app"]
