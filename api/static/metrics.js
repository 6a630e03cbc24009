// What each metric is called, in Chinese and English: the one table every page names a metric
// by (chart axes, subjects, data sources). It lists the conventional metrics of
// docs/config-formats.md; any other keeps its identifier, as the site model spells it.
"use strict";

const METRIC_NAMES = {
  temperature: ["温度", "temperature"],
  humidity: ["相对湿度", "relative humidity"],
  co2: ["二氧化碳", "CO2"],
  hcho: ["甲醛", "formaldehyde"],
  pm10: ["可吸入颗粒物 PM10", "PM10"],
  illuminance: ["照度", "illuminance"],
  hvac_mode: ["空调模式", "HVAC mode"],
  occupied: ["有人", "occupied"],
  window_open: ["开窗", "window open"],
  energy_kwh: ["电能", "electric energy"],
  water_m3: ["用水量", "water"],
  gas_m3: ["燃气用量", "gas"],
  heat_gj: ["热量", "heat"],
};

// The metric's name in `lang` ("zh" or "en").
function metricName(metric, lang) {
  const names = METRIC_NAMES[metric];
  return names ? names[lang === "en" ? 1 : 0] : metric;
}
