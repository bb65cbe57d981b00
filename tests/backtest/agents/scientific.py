"""Uses the scientific stack each step: scipy, scikit-learn, statsmodels and ta (and, once,
scikit-learn's parallel jobs on threads and joblib's worker processes); buys once everything
computed, and says what it computed."""

import backtrader as bt
import numpy as np
import pandas as pd
import statsmodels.api as sm
from joblib import Parallel, delayed
from scipy import stats
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression
from ta.momentum import RSIIndicator


class Scientific(bt.Strategy):
    params = (("window", 20),)

    def __init__(self):
        self.said = "warming up"

    def next(self):
        n = self.p.window
        if len(self) < n:
            return
        closes = np.array(self.data.close.get(size=n))
        x = np.arange(n).reshape(-1, 1)
        slope = LinearRegression().fit(x, closes).coef_[0]
        z = stats.zscore(closes)[-1]
        ols = sm.OLS(closes, sm.add_constant(x.ravel())).fit().params[1]
        rsi = RSIIndicator(pd.Series(closes), window=14).rsi().iloc[-1]
        self.said = f"slope={slope:.6f} ols={ols:.6f} z={z:.3f} rsi={rsi:.1f}"
        if not self.position:
            forest = RandomForestRegressor(n_estimators=8, n_jobs=2, random_state=0)
            fit = forest.fit(x, closes).score(x, closes)
            squares = Parallel(n_jobs=2)(delayed(pow)(i, 2) for i in range(4))
            self.said += f" forest={fit:.2f} parallel={sum(squares)}"
            self.buy(size=1)

    def get_decision_reasoning(self):
        return self.said
