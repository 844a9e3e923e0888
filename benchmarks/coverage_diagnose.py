"""Where along the front the bound misses: error (realised − estimate), coverage and the
modelled vs empirical sd at six fixed front positions, over seeded splits (issue 14 diagnosis).

python benchmarks/coverage_diagnose.py DATASET FRACTION SPLITS FIRST_SEED BOUND [fixed]
(fixed: without the rule's variation across folds, τ²), e.g.
python benchmarks/coverage_diagnose.py synthetic-hidden 0.01 40 100 labelled fixed
"""
import sys, numpy as np
from dataclasses import replace
from optllm.data import load, split
from optllm.predict import fit_predict
from optllm.optimize import pareto_front
from optllm.planning.core import cross_fit
from optllm.evaluate.uncertainty import bounds_along, values_along
name=sys.argv[1]; f=float(sys.argv[2]); reps=int(sys.argv[3]); s0=int(sys.argv[4])
d=load(name)
E=[];C=[];S=[]
for r in range(s0,s0+reps):
    tr,va,te=split(d,train=f,val=f,seed=r).parts(d)
    mean,_=fit_predict("default",tr,va,te,r)
    fr=pareto_front(mean,te.cost)
    h=cross_fit("default",tr,va,5,r,sys.argv[5])
    if len(sys.argv) > 6 and sys.argv[6] == "fixed":
        h=replace(h,rule_variance=False)
    real=values_along(fr,te.correct)
    b=bounds_along(fr,mean,te.cost,h,0.9)
    idx=np.array([0,int(.05*len(fr)),int(.25*len(fr)),int(.5*len(fr)),int(.75*len(fr)),len(fr)-1])
    E.append(real[idx]-b.estimate[idx]); C.append(real[idx]>=b.lower[idx]); S.append(b.sd[idx])
E=np.array(E);C=np.array(C);S=np.array(S)
print(name,f,"err mean",E.mean(0).round(4),"se",(E.std(0)/np.sqrt(reps)).round(4),"cov",C.mean(0).round(2),"sd",S.mean(0).round(4), "emp sd", E.std(0).round(4))
