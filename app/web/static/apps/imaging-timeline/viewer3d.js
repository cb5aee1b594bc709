/*
 * The WebGL image viewer of the imaging timeline: Cornerstone3D (vendored bundle,
 * ../vendor/cornerstone/, see its README) showing one series as a stack, its pixels fetched by
 * WADO-RS through the facade's gateway with the app's bearer token (the same SMART token that
 * found the study). Loaded by app.js with import() only when WebGL is there; the server-rendered
 * images (/rendered) are the fallback otherwise.
 *
 *   createViewer(element, { authorization(), vendor, onImage(index), onError(message), onLoadFailed(imageId) })
 *     -> { showStack(imageIds, metadataByFrame1ImageId), setIndex(i), setWindow({width, center} | null),
 *          zoom(factor), reset() }
 *
 * Mouse: primary drag = window/level, secondary drag = zoom, middle drag or Shift+primary = pan,
 * wheel = stack scroll. The element gets data-gpu="true" once an image was drawn by the GPU
 * rendering engine (not Cornerstone's CPU fallback): the end-to-end test checks that flag.
 */
const RENDERING_ENGINE = "gm-imaging-viewer";
const VIEWPORT = "gm-stack";
const TOOL_GROUP = "gm-stack-tools";

export async function createViewer(element, options) {
  const { core, tools, dicomImageLoader } = await import(options.vendor + "cornerstone.js");
  await core.init();
  if (core.getShouldUseCPURendering()) {
    throw new Error("Cornerstone fell back to CPU rendering: no usable WebGL");
  }
  dicomImageLoader.init({
    maxWebWorkers: 1,
    wasmBasePath: options.vendor + "codecs/",
    beforeSend: () => ({ Authorization: options.authorization() }),
  });
  tools.init();
  const { WindowLevelTool, ZoomTool, PanTool, StackScrollTool, ToolGroupManager, Enums: ToolEnums } = tools;
  [WindowLevelTool, ZoomTool, PanTool, StackScrollTool].forEach((tool) => tools.addTool(tool));

  const engine = new core.RenderingEngine(RENDERING_ENGINE);
  engine.enableElement({
    viewportId: VIEWPORT,
    type: core.Enums.ViewportType.STACK,
    element,
    defaultOptions: { background: [0, 0, 0] },
  });
  const viewport = engine.getViewport(VIEWPORT);

  const group = ToolGroupManager.createToolGroup(TOOL_GROUP);
  group.addViewport(VIEWPORT, RENDERING_ENGINE);
  [WindowLevelTool, ZoomTool, PanTool, StackScrollTool].forEach((tool) => group.addTool(tool.toolName));
  const mouse = ToolEnums.MouseBindings;
  group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: mouse.Primary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: mouse.Secondary }] });
  group.setToolActive(PanTool.toolName, {
    bindings: [{ mouseButton: mouse.Auxiliary }, { mouseButton: mouse.Primary, modifierKey: ToolEnums.KeyboardBindings.Shift }],
  });
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: mouse.Wheel }] });
  element.addEventListener("contextmenu", (e) => e.preventDefault());

  element.addEventListener(core.Enums.Events.STACK_NEW_IMAGE, (event) => {
    options.onImage(event.detail.imageIdIndex);
  });
  element.addEventListener(core.Enums.Events.IMAGE_RENDERED, () => {
    element.dataset.gpu = String(!core.getShouldUseCPURendering());
    element.dataset.renderedIndex = String(viewport.getCurrentImageIdIndex());
  });
  // A frame the loader could not fetch or decode (e.g. a transfer syntax the archive will not send as
  // stored): the app shows that series server-rendered instead.
  const failed = (event) => {
    const imageId = event.detail && event.detail.imageId;
    if (imageId && viewport.getImageIds().includes(imageId)) options.onLoadFailed(imageId, event.detail.error);
  };
  core.eventTarget.addEventListener(core.Enums.Events.IMAGE_LOAD_FAILED, failed);
  core.eventTarget.addEventListener(core.Enums.Events.IMAGE_LOAD_ERROR, failed);
  const resize = new ResizeObserver(() => engine.resize(true, true));
  resize.observe(element);

  return {
    async showStack(imageIds, metadata) {
      Object.keys(metadata).forEach((id) => dicomImageLoader.wadors.metaDataManager.add(id, metadata[id]));
      delete element.dataset.gpu;
      await viewport.setStack(imageIds, 0);
      viewport.resetProperties(); // each series opens at its own stored window, not the previous preset
      viewport.resetCamera();
      viewport.render();
      options.onImage(0);
    },
    setIndex(index) {
      viewport.setImageIdIndex(index).catch((error) => options.onError("The image could not be loaded: " + error));
    },
    setWindow(preset) {
      if (preset) {
        viewport.setProperties({
          voiRange: { lower: preset.center - preset.width / 2, upper: preset.center + preset.width / 2 },
        });
      } else {
        viewport.resetProperties();
      }
      viewport.render();
    },
    zoom(factor) {
      viewport.setZoom(viewport.getZoom() * factor);
      viewport.render();
    },
    reset() {
      viewport.resetProperties();
      viewport.resetCamera();
      viewport.render();
    },
  };
}
