# multihome: the image the Helm chart runs.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11-slim
LABEL org.opencontainers.image.title="multihome" \
      org.opencontainers.image.description="Admission webhook and NetworkPolicy enricher for multi-homed Pods on EKS"
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MULTIHOME_TMP_DIR=/tmp
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY webhook/ webhook/
COPY policies/ policies/
COPY certs/ certs/
# Distroless' nonroot user id; no shell access needed, nothing written outside /tmp.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["python", "-m", "webhook"]
CMD ["serve"]
